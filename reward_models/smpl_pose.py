"""SMPL poses as the converter, the fitter and the critic read them: ``rot6d``, its kinematics, its sources.

``rot6d``, of shape ``(..., T, 25, 6)``:

* slots ``0..23``: the 24 SMPL joints' *local* rotations (each relative to its parent; the
  pelvis's is global), in the continuous 6D form of :func:`motion_env.rotations.matrix_to_cont6d`
  -- the first two *columns* of the rotation matrix, ``[R[:, 0], R[:, 1]]``;
* slot ``24``: the pelvis position of our skeleton in metres, as ``(x, y, z, 0, 0, 0)``.

Y is up and the clip is in HumanML3D's canonical frame (it starts at x = z = 0, facing +Z), like
the ``(..., T, 22, 3)`` joints :func:`motion_env.features.features_to_joints` returns. The rest
pose is SMPL's T-pose on HumanML3D's bone lengths (:mod:`motion_env.skeleton`), so
``smpl_to_joints(rot6d)[..., :22, :]`` are HumanML3D's joints. The two hand joints (22, 23) are
not observed by the 22 joints.

MotionCritic's public data holds the same 25 x 6 per frame in a different 6D convention: the
first two *rows* of each matrix (PyTorch3D's ``matrix_to_rotation_6d``), frames last
``(25, 6, T)``; its network itself reads axis-angle plus the root, ``(T, 25, 3)``. Reading that
data means transposing each rotation (rows -> columns), not reinterpreting the numbers.

Here: :func:`smpl_to_joints` (forward kinematics), :func:`smpl_targets` (a procedural clip's stored
rotations, the converter's training targets) and :func:`smplx_forward` (a real SMPL body through
``smplx``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from motion_env.export import read_smpl_npz
from motion_env.features import canonical_transform
from motion_env.rotations import (
    axis_angle_to_matrix,
    cont6d_to_matrix,
    cont6d_to_quat,
    matrix_to_axis_angle,
    matrix_to_cont6d,
    numpy_compatible,
    quat_to_matrix,
)
from motion_env.skeleton import NUM_JOINTS, NUM_SMPL_JOINTS, PARENTS, REST_OFFSETS, forward_kinematics

NUM_SLOTS = NUM_SMPL_JOINTS + 1  # 24 rotations + the root position
ROOT_SLOT = NUM_SMPL_JOINTS
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
TARGET_TOLERANCE = 0.01  # metres: stored rotations that miss the stored joints by more are refused


def check_joints(joints, name: str = "joints") -> torch.Tensor:
    """``joints`` as a float tensor after checking it is ``(..., T, 22, 3)`` and finite."""
    joints = torch.as_tensor(joints)
    if joints.ndim < 3 or joints.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(f"{name} must have shape (..., T, {NUM_JOINTS}, 3) (HumanML3D's joints), "
                         f"got {tuple(joints.shape)}")  # fmt: skip
    if not joints.is_floating_point():
        joints = joints.float()
    if not torch.isfinite(joints).all():
        bad = torch.nonzero(~torch.isfinite(joints))[0].tolist()
        raise ValueError(f"{name} contains NaN or Inf (first at index {tuple(bad)})")
    return joints


def frame_mask(lengths, batch: int, num_frames: int, device=None) -> torch.Tensor:
    """``(B, T)`` bool mask of valid frames; all frames when ``lengths`` is None."""
    if lengths is None:
        return torch.ones(batch, num_frames, dtype=torch.bool, device=device)
    lengths = torch.as_tensor(lengths, device=device).long()
    if lengths.shape != (batch,) or lengths.min() < 1 or lengths.max() > num_frames:
        raise ValueError(f"lengths must have shape ({batch},) with values in [1, T={num_frames}], "
                         f"got {lengths.tolist()}")  # fmt: skip
    return torch.arange(num_frames, device=device) < lengths[:, None]


def pack_rot6d(cont6d: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """``(..., 24, 6)`` rotations and ``(..., 3)`` pelvis positions -> ``(..., 25, 6)``."""
    root_slot = torch.cat([root, torch.zeros_like(root)], dim=-1)  # (..., 6)
    return torch.cat([cont6d, root_slot[..., None, :]], dim=-2)


def identity_rot6d(shape: tuple, dtype=torch.float32, device=None) -> torch.Tensor:
    """``shape + (25, 6)``: every joint at rest, the pelvis at the origin."""
    rot6d = torch.zeros(shape + (NUM_SLOTS, 6), dtype=dtype, device=device)
    rot6d[..., :NUM_SMPL_JOINTS, :] = torch.tensor(IDENTITY_6D, dtype=dtype, device=device)
    return rot6d


@numpy_compatible
def smpl_to_joints(rot6d: torch.Tensor) -> torch.Tensor:
    """Forward kinematics of ``rot6d`` ``(..., T, 25, 6)`` -> ``(..., T, 24, 3)`` joint positions.

    The first 22 joints are HumanML3D's. Differentiable; numpy in, numpy out.
    """
    if rot6d.shape[-2:] != (NUM_SLOTS, 6):
        raise ValueError(f"rot6d must have shape (..., T, {NUM_SLOTS}, 6), got {tuple(rot6d.shape)}")
    quats = cont6d_to_quat(rot6d[..., :NUM_SMPL_JOINTS, :])  # (..., 24, 4)
    return forward_kinematics(quats, rot6d[..., ROOT_SLOT, :3])


def _ancestry() -> np.ndarray:
    """``(24, 23)``: entry ``[j, b]`` is 1 when bone ``b`` (ending at joint ``b + 1``) lies on j's chain."""
    ancestry = np.zeros((NUM_SMPL_JOINTS, NUM_SMPL_JOINTS - 1))
    for j in range(1, NUM_SMPL_JOINTS):
        k = j
        while k > 0:
            ancestry[j, k - 1] = 1.0
            k = PARENTS[k]
    return ancestry


_ANCESTRY = _ancestry()
_PARENT_OF_CHILD = list(PARENTS[1:NUM_SMPL_JOINTS])


def global_to_local(global_rots: torch.Tensor) -> torch.Tensor:
    """Local rotations ``(..., 24, 3, 3)`` from global ones: ``G_parent^T G_j`` (the root's stays global)."""
    children = global_rots[..., _PARENT_OF_CHILD, :, :].transpose(-1, -2) @ global_rots[..., 1:, :, :]
    return torch.cat([global_rots[..., :1, :, :], children], dim=-3)


def global_forward_kinematics(global_rots: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """Joints ``(..., 24, 3)`` from *global* rotations ``(..., 24, 3, 3)`` and the pelvis ``(..., 3)``.

    The same skeleton as :func:`motion_env.skeleton.forward_kinematics`, without its joint-by-joint
    loop: with global rotations every bone is one matrix product, and a joint is the pelvis plus
    the bones of its chain. Training losses and the fitter call this many times per step.
    """
    offsets = torch.tensor(REST_OFFSETS[1:], dtype=root.dtype, device=root.device)  # (23, 3)
    bones = (global_rots[..., _PARENT_OF_CHILD, :, :] @ offsets[..., None])[..., 0]  # (..., 23, 3)
    ancestry = torch.tensor(_ANCESTRY, dtype=root.dtype, device=root.device)  # (24, 23)
    return root[..., None, :] + ancestry @ bones


def _yaw_fit(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation about Y ``(3, 3)`` and shift ``(3,)`` minimising ``|R @ source + t - target|``."""
    a = source.reshape(-1, 3) - source.reshape(-1, 3).mean(0)
    b = target.reshape(-1, 3) - target.reshape(-1, 3).mean(0)
    angle = np.arctan2((b[:, 0] * a[:, 2] - b[:, 2] * a[:, 0]).sum(), (b[:, 0] * a[:, 0] + b[:, 2] * a[:, 2]).sum())
    c, s = np.cos(angle), np.sin(angle)
    yaw = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return yaw, target.reshape(-1, 3).mean(0) - yaw @ source.reshape(-1, 3).mean(0)


def smpl_targets(data_root: str | Path, clip_id: str) -> np.ndarray:
    """A procedural clip's stored rotations as ``rot6d`` ``(T, 25, 6)`` float32, in HumanML3D's frame.

    Reads ``smpl/<id>.npz`` (AMASS keys) and moves it rigidly (a turn about Y and a shift) onto
    ``new_joints/<id>.npy``, so that ``smpl_to_joints(targets)[:, :22]`` reproduces the stored joints.
    A raw clip one frame longer than its joints (features drop the last frame) is cropped. Without
    ``new_joints``, HumanML3D's canonicalisation of the rotations' own joints is applied instead.

    Raises:
        FileNotFoundError: no ``smpl/<id>.npz``.
        ValueError: frame counts that do not match, or rotations whose joints miss the stored
            joints by more than ``TARGET_TOLERANCE`` after the rigid move.
    """
    root = Path(data_root)
    path = root / "smpl" / f"{clip_id}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"smpl_targets: no rotations for clip {clip_id!r}: {path} does not exist")
    smpl = read_smpl_npz(path)
    poses = smpl["poses"][:, : 3 * NUM_SMPL_JOINTS].astype(np.float64)
    matrices = axis_angle_to_matrix(poses.reshape(len(poses), NUM_SMPL_JOINTS, 3))  # (T, 24, 3, 3)
    trans = smpl["trans"].astype(np.float64)  # (T, 3)
    joints_path = root / "new_joints" / f"{clip_id}.npy"
    reference = np.load(joints_path).astype(np.float64) if joints_path.is_file() else None
    if reference is not None:
        if len(poses) == len(reference) + 1:
            matrices, trans = matrices[:-1], trans[:-1]
        elif len(poses) != len(reference):
            raise ValueError(f"smpl_targets: {path} has {len(poses)} frames but {joints_path} has {len(reference)} "
                             "(expected equal, or one more in the raw clip)")  # fmt: skip
    cont6d = matrix_to_cont6d(matrices)
    joints = smpl_to_joints(np.concatenate([cont6d, np.pad(trans, ((0, 0), (0, 3)))[:, None]], axis=1))
    if reference is not None:
        yaw, shift = _yaw_fit(joints[:, :NUM_JOINTS], reference)
    else:
        move, quat = canonical_transform(joints[:, :NUM_JOINTS])
        yaw = quat_to_matrix(quat)
        shift = yaw @ move
    matrices = matrices.copy()
    matrices[:, 0] = yaw @ matrices[:, 0]
    trans = trans @ yaw.T + shift
    targets = np.concatenate([matrix_to_cont6d(matrices), np.pad(trans, ((0, 0), (0, 3)))[:, None]], axis=1)
    if reference is not None:
        # Forward kinematics commutes with a rigid move of the pelvis: move the joints, not re-run it.
        error = np.abs(joints[:, :NUM_JOINTS] @ yaw.T + shift - reference).max()
        if error > TARGET_TOLERANCE:
            raise ValueError(f"smpl_targets: the rotations in {path} miss {joints_path} by up to {error:.4f} m "
                             f"after alignment (expected < {TARGET_TOLERANCE} m)")  # fmt: skip
    return targets.astype(np.float32)


# --------------------------------------------------------------------------------- SMPL body model

SMPL_NPZ_KEYS = ("v_template", "f", "J_regressor", "weights", "kintree_table", "shapedirs", "posedirs")


class SMPLBody(NamedTuple):
    """What :func:`smplx_forward` returns."""

    vertices: torch.Tensor  # (..., T, V, 3)
    joints: torch.Tensor  # (..., T, 24, 3) SMPL's own skeleton
    faces: torch.Tensor  # (F, 3) long


def _smpl_model_file(model_path: str | Path, gender: str) -> Path:
    path = Path(model_path)
    if path.is_dir():
        name = f"SMPL_{gender.upper()}.npz"
        candidates = [path / name, path / "smpl" / name]
        path = next((p for p in candidates if p.is_file()), candidates[0])
    if path.suffix == ".pkl":
        raise ValueError(f"smplx_forward: {path} is a pickle (SMPL's own format, which needs chumpy and unpickling); "
                         f"convert it once to an .npz holding {list(SMPL_NPZ_KEYS)}")  # fmt: skip
    if not path.is_file():
        raise FileNotFoundError(f"smplx_forward: SMPL model file {path} does not exist (expected an .npz with "
                                f"{list(SMPL_NPZ_KEYS)}, or a directory holding SMPL_{gender.upper()}.npz)")  # fmt: skip
    return path


def smplx_forward(rot6d, model_path: str | Path, *, betas=None, gender: str = "neutral") -> SMPLBody:
    """Pose a real SMPL body with ``rot6d`` ``(..., T, 25, 6)`` through ``smplx``.

    Rotations become axis-angle ``global_orient`` / ``body_pose``; ``transl`` is chosen so that the
    body's pelvis lands on slot 24 (``transl = pelvis - J_0(betas)``, the rest pelvis of the shaped
    body). SMPL's bone lengths differ from HumanML3D's, so its joints differ a little from
    :func:`smpl_to_joints`; the rotations mean the same (both are SMPL's T-pose kinematic tree).

    Args:
        rot6d: ``(..., T, 25, 6)`` tensor or array.
        model_path: an SMPL ``.npz`` (smplx's key names, read without unpickling) or a directory
            with ``SMPL_<GENDER>.npz`` (directly or under ``smpl/``).
        betas: ``(num_betas,)`` shape coefficients shared by every frame; zeros by default.
        gender: ``"neutral"``, ``"male"`` or ``"female"`` (picks the file in a directory).
    """
    import smplx
    from smplx.utils import Struct
    from smplx.vertex_ids import vertex_ids as VERTEX_IDS

    if gender not in ("neutral", "male", "female"):
        raise ValueError(f"smplx_forward: gender must be 'neutral', 'male' or 'female', got {gender!r}")
    rot6d = torch.as_tensor(rot6d, dtype=torch.float32)
    if rot6d.ndim < 3 or rot6d.shape[-2:] != (NUM_SLOTS, 6):
        raise ValueError(f"smplx_forward: rot6d must have shape (..., T, {NUM_SLOTS}, 6), got {tuple(rot6d.shape)}")
    path = _smpl_model_file(model_path, gender)
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in SMPL_NPZ_KEYS if k not in npz.files]
        if missing:
            raise ValueError(f"smplx_forward: {path} lacks {missing} (has {sorted(npz.files)})")
        arrays = {k: npz[k] for k in npz.files}
    num_betas = min(10, arrays["shapedirs"].shape[-1])
    betas = torch.zeros(num_betas) if betas is None else torch.as_tensor(betas, dtype=torch.float32)
    if betas.shape != (num_betas,):
        raise ValueError(f"smplx_forward: betas must have shape ({num_betas},) for {path}, got {tuple(betas.shape)}")

    frames = rot6d.reshape(-1, NUM_SLOTS, 6)  # (N, 25, 6)
    axis_angle = matrix_to_axis_angle(cont6d_to_matrix(frames[:, :NUM_SMPL_JOINTS]))  # (N, 24, 3)
    # Only the 24 regressed joints are returned: smplx's extra landmark joints (vertex picks on the
    # full 6890-vertex mesh) are pointed at vertex 0 and cut off, so a mesh of any size loads.
    body = smplx.create(str(path.parent), model_type="smpl", data_struct=Struct(**arrays), gender=gender,
                        num_betas=num_betas, vertex_ids=dict.fromkeys(VERTEX_IDS["smplh"], 0))  # fmt: skip
    rest_pelvis = body.J_regressor[0] @ (body.v_template + torch.einsum("l,vkl->vk", betas, body.shapedirs))  # (3,)
    out = body(betas=betas.expand(len(frames), -1), global_orient=axis_angle[:, 0],
               body_pose=axis_angle[:, 1:].reshape(len(frames), -1), transl=frames[:, ROOT_SLOT, :3] - rest_pelvis)  # fmt: skip
    lead = rot6d.shape[:-2]
    return SMPLBody(vertices=out.vertices.reshape(lead + out.vertices.shape[-2:]),
                    joints=out.joints[:, :NUM_SMPL_JOINTS].reshape(lead + (NUM_SMPL_JOINTS, 3)), faces=body.faces_tensor)  # fmt: skip
