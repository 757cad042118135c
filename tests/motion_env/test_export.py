import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from motion_env.export import read_bvh, read_smpl_npz, to_bvh, to_smpl_npz
from motion_env.rotations import EULER_ORDERS, axis_angle_to_quat, euler_to_matrix, matrix_to_euler, quat_to_axis_angle
from motion_env.skeleton import JOINT_NAMES, NUM_JOINTS, PARENTS, forward_kinematics


def smooth_motion(num_frames=60, num_joints=24, seed=0):
    """Small smooth local rotations, a root turning a full circle, and a root path."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames)[:, None, None] / 20.0
    axis_angle = 0.4 * np.sin(rng.uniform(1, 3, (1, num_joints, 3)) * t + rng.uniform(0, 6, (1, num_joints, 3)))
    axis_angle[:, 0] = 0.0
    axis_angle[:, 0, 1] = np.linspace(0, 2 * np.pi, num_frames)  # yaw through +-180 degrees
    t = t[:, 0, 0]
    root = np.stack([0.8 * t, 0.9 + 0.03 * np.sin(6 * t), 1.2 * t], axis=1)
    return axis_angle_to_quat(axis_angle), root


@pytest.mark.parametrize("order", EULER_ORDERS)
def test_euler_round_trip_and_matches_scipy_intrinsic(order):
    rng = np.random.default_rng(1)
    angles = rng.uniform(-np.pi, np.pi, (200, 3))
    angles[:, 1] /= 2  # middle angle in [-pi/2, pi/2]: the canonical range
    matrices = euler_to_matrix(angles, order)
    np.testing.assert_allclose(matrices, Rotation.from_euler(order, angles).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(matrix_to_euler(matrices, order), angles, atol=1e-9)


@pytest.mark.parametrize("order", ["ZXY", "XYZ", "ZYX"])
def test_euler_gimbal_lock_still_round_trips_the_matrix(order):
    angles = np.array([[0.3, np.pi / 2, -0.7], [1.1, -np.pi / 2, 0.2]])
    matrices = euler_to_matrix(torch.tensor(angles, dtype=torch.float32), order)
    recovered = euler_to_matrix(matrix_to_euler(matrices, order), order)
    assert isinstance(recovered, torch.Tensor)
    torch.testing.assert_close(recovered, matrices, atol=1e-5, rtol=0)


def test_euler_rejects_unknown_order():
    with pytest.raises(ValueError, match="order must be one of"):
        euler_to_matrix(np.zeros((2, 3)), "XXY")


@pytest.mark.parametrize("num_joints", [24, 22])
def test_bvh_round_trip_reproduces_forward_kinematics(tmp_path, num_joints):
    quats, root = smooth_motion(num_joints=num_joints)
    path = to_bvh(quats, root, tmp_path / "clip.bvh", fps=20.0)
    names, parents, offsets, read_quats, read_root, fps = read_bvh(path)

    assert fps == pytest.approx(20.0)
    assert sorted(names) == sorted(JOINT_NAMES[:num_joints])
    index = [names.index(name) for name in JOINT_NAMES[:NUM_JOINTS]]  # file order -> SMPL order
    assert [names[p] if p >= 0 else None for p in parents[index]] == [
        JOINT_NAMES[p] if p >= 0 else None for p in PARENTS[:NUM_JOINTS]
    ]
    expected = forward_kinematics(quats[:, :NUM_JOINTS], root)
    recovered = forward_kinematics(read_quats[:, index], read_root, offsets[index])
    np.testing.assert_allclose(recovered, expected, atol=1e-4)


def test_bvh_layout(tmp_path):
    quats, root = smooth_motion(num_frames=7)
    text = to_bvh(quats, root, tmp_path / "clip.bvh", fps=30.0).read_text()
    assert text.startswith("HIERARCHY\nROOT pelvis\n")
    assert "CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation" in text
    assert text.count("End Site") == 5  # feet, head, hands
    motion = text.split("MOTION\n")[1].splitlines()
    assert motion[0] == "Frames: 7" and motion[1].startswith("Frame Time: 0.0333333")
    assert all(len(line.split()) == 3 + 3 * 24 for line in motion[2:]) and len(motion) == 9
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_read_bvh_plain_standard_file(tmp_path):
    path = tmp_path / "plain.bvh"
    path.write_text(
        "HIERARCHY\nROOT Hips\n{\n OFFSET 0 0 0\n"
        " CHANNELS 6 Xposition Yposition Zposition Yrotation Xrotation Zrotation\n"
        " JOINT Spine\n {\n  OFFSET 0 10 0\n  CHANNELS 3 Xrotation Yrotation Zrotation\n"
        "  End Site\n  {\n   OFFSET 0 5 0\n  }\n }\n}\n"
        "MOTION\nFrames: 2\nFrame Time: 0.0333333\n1 2 3 90 0 0 0 0 0\n1 2 3 0 0 0 90 0 0\n"
    )
    names, parents, offsets, quats, root, fps = read_bvh(path)
    assert names == ["Hips", "Spine"] and parents.tolist() == [-1, 0]
    np.testing.assert_allclose(offsets, [[0, 0, 0], [0, 10, 0]])
    np.testing.assert_allclose(root, [[1, 2, 3], [1, 2, 3]])
    np.testing.assert_allclose(quat_to_axis_angle(quats[0, 0]), [0, np.pi / 2, 0], atol=1e-9)  # Yrotation 90
    np.testing.assert_allclose(quat_to_axis_angle(quats[1, 1]), [np.pi / 2, 0, 0], atol=1e-9)  # Xrotation 90
    assert fps == pytest.approx(30.0, rel=1e-5)


def test_read_bvh_rejects_truncated_motion(tmp_path):
    quats, root = smooth_motion(num_frames=5)
    path = to_bvh(quats, root, tmp_path / "clip.bvh")
    path.write_text(path.read_text().rsplit("\n", 2)[0])  # drop the last frame
    with pytest.raises(ValueError, match="declares 5 frames"):
        read_bvh(path)


def test_to_bvh_rejects_bad_input(tmp_path):
    quats, root = smooth_motion(num_frames=10)
    with pytest.raises(ValueError, match=r"local_quats must have shape \(T, 22 or 24, 4\).*\(10, 24, 3\)"):
        to_bvh(quats[..., :3], root, tmp_path / "a.bvh")
    with pytest.raises(ValueError, match="root_positions has 9 frames but local rotations have 10"):
        to_bvh(quats, root[:9], tmp_path / "a.bvh")
    bad = root.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"root_positions contains NaN or Inf \(first at index \(3, 1\)\)"):
        to_bvh(quats, bad, tmp_path / "a.bvh")
    with pytest.raises(ValueError, match=r"offsets must have shape \(24, 3\)"):
        to_bvh(quats, root, tmp_path / "a.bvh", offsets=np.zeros((22, 3)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_bvh(quats, root, tmp_path / "missing" / "a.bvh")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("layout", ["aa_24", "aa_72", "quat_24", "quat_22"])
def test_smpl_npz_round_trip(tmp_path, layout):
    quats, trans = smooth_motion(num_frames=12)
    axis_angle = quat_to_axis_angle(quats)  # (T, 24, 3)
    poses = {
        "aa_24": axis_angle,
        "aa_72": axis_angle.reshape(12, 72),
        "quat_24": torch.from_numpy(quats),
        "quat_22": quats[:, :22],
    }[layout]
    path = to_smpl_npz(poses, trans, tmp_path / "clip.npz", fps=20.0, gender="female")

    with np.load(path, allow_pickle=False) as raw:
        assert sorted(raw.files) == ["betas", "gender", "mocap_framerate", "poses", "trans"]
        assert raw["poses"].dtype == np.float32 and raw["poses"].shape == (12, 72)
    data = read_smpl_npz(path)
    expected = axis_angle.copy()
    if layout == "quat_22":
        expected[:, 22:] = 0.0  # hands at rest
    np.testing.assert_allclose(data["poses"].reshape(12, 24, 3), expected, atol=1e-6)
    np.testing.assert_allclose(data["trans"], trans, atol=1e-6)
    np.testing.assert_array_equal(data["betas"], np.zeros(10))
    assert data["gender"] == "female" and data["mocap_framerate"] == 20.0


def test_to_smpl_npz_rejects_bad_input(tmp_path):
    quats, trans = smooth_motion(num_frames=10)
    with pytest.raises(ValueError, match=r"poses must be axis-angle .* got \(10, 23, 3\)"):
        to_smpl_npz(np.zeros((10, 23, 3)), trans, tmp_path / "a.npz")
    with pytest.raises(ValueError, match="trans has 8 frames but local rotations have 10"):
        to_smpl_npz(quats, trans[:8], tmp_path / "a.npz")
    with pytest.raises(ValueError, match="poses contains NaN or Inf"):
        to_smpl_npz(np.full((10, 72), np.inf), trans, tmp_path / "a.npz")
    with pytest.raises(ValueError, match="gender must be one of"):
        to_smpl_npz(quats, trans, tmp_path / "a.npz", gender="other")
    assert not list(tmp_path.iterdir())


def test_read_smpl_npz_errors(tmp_path):
    np.savez(tmp_path / "no_trans.npz", poses=np.zeros((4, 72)), betas=np.zeros(10), gender=np.array("male"),
             mocap_framerate=np.array(30.0))  # fmt: skip
    with pytest.raises(ValueError, match=r"lacks keys \['trans'\]"):
        read_smpl_npz(tmp_path / "no_trans.npz")
    np.savez(tmp_path / "short.npz", poses=np.zeros((4, 72)), trans=np.zeros((3, 3)), betas=np.zeros(10),
             gender=np.array("male"), mocap_framerate=np.array(30.0))  # fmt: skip
    with pytest.raises(ValueError, match=r"trans must have shape \(4, 3\) to match poses, got \(3, 3\)"):
        read_smpl_npz(tmp_path / "short.npz")
    np.savez(tmp_path / "pickled.npz", poses=np.zeros((4, 72)), trans=np.zeros((4, 3)), betas=np.zeros(10),
             gender=np.array({"a": 1}, dtype=object), mocap_framerate=np.array(30.0))  # fmt: skip
    with pytest.raises(ValueError, match="pickled objects"):
        read_smpl_npz(tmp_path / "pickled.npz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_smpl_npz(tmp_path / "absent.npz")
