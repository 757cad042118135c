import numpy as np
import pytest
import torch

from motion_env import rotations as R


@pytest.fixture
def quats():
    q = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return R.quat_normalize(q)


def _same_rotation(q1, q2):
    return torch.minimum((q1 - q2).abs().amax(-1), (q1 + q2).abs().amax(-1)).max()


def test_matrix_roundtrip_and_orthonormal(quats):
    m = R.quat_to_matrix(quats)
    assert torch.allclose(m @ m.transpose(-1, -2), torch.eye(3, dtype=m.dtype).expand_as(m), atol=1e-12)
    assert torch.allclose(torch.linalg.det(m), torch.ones(64, dtype=m.dtype))
    assert _same_rotation(R.matrix_to_quat(m), quats) < 1e-12


def test_matrix_to_quat_near_180_degrees():
    aa = torch.tensor([[np.pi - 1e-9, 0, 0], [0, np.pi, 0], [0, 0, -np.pi + 1e-7]], dtype=torch.float64)
    m = R.axis_angle_to_matrix(aa)
    assert torch.allclose(R.quat_to_matrix(R.matrix_to_quat(m)), m, atol=1e-9)


def test_axis_angle_roundtrip_including_zero(quats):
    aa = R.quat_to_axis_angle(quats)
    assert aa.norm(dim=-1).max() <= np.pi + 1e-9
    assert _same_rotation(R.axis_angle_to_quat(aa), quats) < 1e-12
    zero = torch.zeros(2, 3, dtype=torch.float64)
    assert torch.equal(R.axis_angle_to_quat(zero), torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=torch.float64))


def test_rotate_matches_matrix(quats):
    v = torch.randn(64, 3, dtype=torch.float64)
    assert torch.allclose(R.quat_rotate(quats, v), (R.quat_to_matrix(quats) @ v[..., None])[..., 0], atol=1e-12)


def test_mul_composes_rotations(quats):
    a, b = quats[:32], quats[32:]
    assert torch.allclose(R.quat_to_matrix(R.quat_mul(a, b)), R.quat_to_matrix(a) @ R.quat_to_matrix(b), atol=1e-12)
    identity = R.quat_mul(a, R.quat_inv(a))
    assert torch.allclose(identity, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand_as(identity), atol=1e-12)


def test_cont6d_is_first_two_columns_and_roundtrips(quats):
    m = R.quat_to_matrix(quats)
    d6 = R.matrix_to_cont6d(m)
    assert torch.equal(d6[:, :3], m[:, :, 0]) and torch.equal(d6[:, 3:], m[:, :, 1])
    assert torch.allclose(R.cont6d_to_matrix(d6), m, atol=1e-12)
    assert _same_rotation(R.cont6d_to_quat(R.quat_to_cont6d(quats)), quats) < 1e-12


def test_between_maps_direction():
    v0 = torch.randn(20, 3, dtype=torch.float64)
    v1 = torch.randn(20, 3, dtype=torch.float64)
    rotated = R.quat_rotate(R.quat_between(v0, v1), v0)
    assert torch.allclose(rotated / rotated.norm(dim=-1, keepdim=True), v1 / v1.norm(dim=-1, keepdim=True), atol=1e-12)


def test_slerp_endpoints_and_midpoint(quats):
    a, b = quats[:8], quats[8:16]
    assert _same_rotation(R.quat_slerp(a, b, 0.0), a) < 1e-12
    assert _same_rotation(R.quat_slerp(a, b, 1.0), b) < 1e-12
    mid = R.quat_slerp(a, b, 0.5)
    angle = lambda p, q: 2 * torch.acos((p * q).sum(-1).abs().clamp(max=1))  # noqa: E731
    assert torch.allclose(angle(a, mid), angle(mid, b), atol=1e-9)


def test_numpy_in_numpy_out(quats):
    q = quats.numpy().astype(np.float32)
    m = R.quat_to_matrix(q)
    assert isinstance(m, np.ndarray) and m.dtype == np.float32 and m.shape == (64, 3, 3)
    np.testing.assert_allclose(m, R.quat_to_matrix(quats).numpy(), atol=1e-6)
