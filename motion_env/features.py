"""HumanML3D's 263-D motion features: joints -> features, features -> joints, normalisation.

Per frame, in this order (``FEATURE_SLICES``)::

    [0]        root angular velocity about Y (half-angle of the per-frame Y rotation, radians)
    [1:3]      root linear velocity x, z in the root's frame
    [3]        root height
    [4:67]     21x3 root-relative joint positions ("ric"), body facing Z+
    [67:193]   21x6 continuous 6D joint rotations
    [193:259]  22x3 joint velocities in the root's frame
    [259:263]  foot contacts: left ankle, left toe, right ankle, right toe

``T`` frames of joints give ``T-1`` feature frames. This follows the public HumanML3D
processing step by step (``process_file`` / ``recover_from_ric``), including its
quirks, so that features written here and features from the real dataset mean the
same thing; the fixture tests check it against a real clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from motion_env.rotations import numpy_compatible, quat_between, quat_inv, quat_mul, quat_rotate, quat_to_cont6d
from motion_env.skeleton import FACE_JOINTS, KINEMATIC_CHAIN, LEFT_FOOT, NUM_JOINTS, RIGHT_FOOT

FEATURE_DIM = 263
FEATURE_SLICES = {
    "root_rot_velocity": slice(0, 1),
    "root_linear_velocity": slice(1, 3),
    "root_height": slice(3, 4),
    "ric": slice(4, 67),
    "rotations": slice(67, 193),
    "local_velocity": slice(193, 259),
    "foot_contact": slice(259, 263),
}
CONTACT_THRESHOLD = 0.002  # squared frame-to-frame displacement, metres^2 (KIT uses 0.05)

# Rest directions used by HumanML3D's inverse kinematics for the 6D rotation slice
# ("t2m_raw_offsets"): arms hang down, feet and head point forward.
_IK_RAW_OFFSETS = np.array([
    [0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0], [0, 1, 0], [0, -1, 0],
    [0, -1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1],
    [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0],
], dtype=np.float64)  # fmt: skip
_Y_UP = np.array([[0.0, 1.0, 0.0]])
_Z_FORWARD = np.array([[0.0, 0.0, 1.0]])


def feature_dim(num_joints: int) -> int:
    """Width of the feature vector for a skeleton: 263 for HumanML3D (22), 251 for KIT (21)."""
    return 4 + (num_joints - 1) * 9 + num_joints * 3 + 4


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.sqrt((v**2).sum(axis=-1, keepdims=True))


def _forward_from_across(across: np.ndarray) -> np.ndarray:
    return np.cross(_Y_UP, _unit(across), axis=-1)


def canonical_transform(
    joints: np.ndarray, face_joints: tuple[int, int, int, int] = FACE_JOINTS
) -> tuple[np.ndarray, np.ndarray]:
    """The move that :func:`canonicalize` applies: ``(shift (3,), yaw quaternion (4,))``.

    ``canonical = quat_rotate(yaw, joints + shift)``: put the clip on the floor, frame 0's root
    at x = z = 0, and turn it so that frame 0 faces +Z.
    """
    joints = np.asarray(joints, dtype=np.float64)
    shift = -joints[0, 0] * np.array([1.0, 0.0, 1.0])
    shift[1] = -joints.min(axis=0).min(axis=0)[1]
    r_hip, l_hip, r_shoulder, l_shoulder = face_joints
    first = joints[0]
    across = (first[r_hip] - first[l_hip]) + (first[r_shoulder] - first[l_shoulder])
    forward = _unit(_forward_from_across(across[None]))
    return shift, quat_between(forward, _Z_FORWARD)[0]


def canonicalize(joints: np.ndarray, face_joints: tuple[int, int, int, int] = FACE_JOINTS) -> np.ndarray:
    """Put a clip on the floor, move frame 0's root to x=z=0 and turn it to face +Z.

    Args:
        joints: ``(T, J, 3)`` world positions, Y up.

    Returns:
        ``(T, J, 3)`` float64 positions, the frame ``joints_to_features`` works in.
    """
    shift, yaw = canonical_transform(joints, face_joints)
    positions = np.asarray(joints, dtype=np.float64) + shift
    return quat_rotate(np.broadcast_to(yaw, positions.shape[:-1] + (4,)), positions)


def _root_facing(positions: np.ndarray, face_joints: tuple[int, int, int, int]) -> np.ndarray:
    """Per-frame root Y rotation (T, 4) that turns the smoothed facing to +Z; frame 0 is identity.

    HumanML3D's inverse kinematics unpacks the face joints as (l_hip, r_hip, r_sh, l_sh)
    while they are listed (r_hip, l_hip, r_sh, l_sh); the real features were made that
    way, so the same order is kept here.
    """
    first_hip, second_hip, r_shoulder, l_shoulder = face_joints
    across = (positions[:, second_hip] - positions[:, first_hip]) + (positions[:, r_shoulder] - positions[:, l_shoulder])
    forward = gaussian_filter1d(_forward_from_across(across), 20, axis=0, mode="nearest")
    root_quat = quat_between(_unit(forward), np.repeat(_Z_FORWARD, len(forward), axis=0))
    root_quat[0] = (1.0, 0.0, 0.0, 0.0)
    # Keep consecutive quaternions on the same side of the double cover. The reference skips
    # this, which is harmless until the facing passes 180 degrees from the start (a turn around,
    # a spin): then the per-frame turn flips sign there and the recovered root spins off.
    flips = np.cumsum(np.concatenate([[False], (root_quat[1:] * root_quat[:-1]).sum(-1) < 0])) % 2
    return np.where(flips[:, None] == 1, -root_quat, root_quat)


def _local_quats(positions: np.ndarray, root_quat: np.ndarray, chain) -> np.ndarray:
    """HumanML3D's inverse kinematics: local rotation of each bone from its rest direction."""
    num_frames, num_joints = positions.shape[:2]
    quats = np.zeros((num_frames, num_joints, 4))
    quats[:, 0] = root_quat
    for limb in chain:
        parent_rot = root_quat
        for parent, child in zip(limb[:-1], limb[1:]):
            rest = np.repeat(_IK_RAW_OFFSETS[None, child], num_frames, axis=0)
            bone = _unit(positions[:, child] - positions[:, parent])
            local = quat_mul(quat_inv(parent_rot), quat_between(rest, bone))
            quats[:, child] = local
            parent_rot = quat_mul(parent_rot, local)
    return quats


def foot_contacts(positions: np.ndarray, threshold: float = CONTACT_THRESHOLD, feet=LEFT_FOOT + RIGHT_FOOT) -> np.ndarray:
    """``(T-1, 4)`` contact flags: squared displacement to the next frame under ``threshold``.

    HumanML3D's reference code also defines a height factor but never applies it; the real
    features are velocity-only, and so are these (the fixture test checks they match).
    """
    displacement = ((positions[1:, list(feet)] - positions[:-1, list(feet)]) ** 2).sum(-1)
    return (displacement < threshold).astype(np.float64)


def joints_to_features(
    joints: np.ndarray | torch.Tensor,
    *,
    face_joints: tuple[int, int, int, int] = FACE_JOINTS,
    contact_threshold: float = CONTACT_THRESHOLD,
    feet: tuple[int, ...] = LEFT_FOOT + RIGHT_FOOT,
    kinematic_chain=KINEMATIC_CHAIN,
) -> np.ndarray:
    """HumanML3D features of one clip.

    Args:
        joints: ``(T, J, 3)`` joint positions in metres, Y up, ``T >= 2`` (J = 22 for HumanML3D).
        face_joints, contact_threshold, feet, kinematic_chain: skeleton settings; the defaults
            are HumanML3D's (see :data:`motion_env.datasets.KIT_ML` for KIT-ML's).

    Returns:
        ``(T-1, 4 + 9(J-1) + 3J + 4)`` float32 features (263 for 22 joints).
    """
    joints = joints.detach().cpu().numpy() if isinstance(joints, torch.Tensor) else np.asarray(joints)
    if joints.ndim != 3 or joints.shape[-1] != 3 or joints.shape[0] < 2:
        raise ValueError(f"joints must have shape (T>=2, J, 3), got {joints.shape}")
    if not np.isfinite(joints).all():
        raise ValueError("joints contain NaN or Inf")

    positions = canonicalize(joints, face_joints)
    global_positions = positions.copy()
    contacts = np.concatenate(
        [foot_contacts(positions, contact_threshold, feet[:2]), foot_contacts(positions, contact_threshold, feet[2:])],
        axis=-1,
    )

    root_quat = _root_facing(positions, face_joints)  # (T, 4)
    rotations_6d = quat_to_cont6d(_local_quats(positions, root_quat, kinematic_chain))  # (T, J, 6)
    root_velocity = quat_rotate(root_quat[1:], positions[1:, 0] - positions[:-1, 0])  # (T-1, 3)
    root_turn = quat_mul(root_quat[1:], quat_inv(root_quat[:-1]))  # (T-1, 4)

    ric = positions.copy()
    ric[..., 0] -= ric[:, 0:1, 0]
    ric[..., 2] -= ric[:, 0:1, 2]
    ric = quat_rotate(root_quat[:, None], ric)  # (T, J, 3)

    local_velocity = quat_rotate(root_quat[:-1, None], global_positions[1:] - global_positions[:-1])

    num_frames = len(positions) - 1
    features = np.concatenate(
        [
            np.arcsin(root_turn[:, 2:3]),
            root_velocity[:, [0, 2]],
            ric[:-1, 0, 1:2],
            ric[:-1, 1:].reshape(num_frames, -1),
            rotations_6d[:-1, 1:].reshape(num_frames, -1),
            local_velocity.reshape(num_frames, -1),
            contacts,
        ],
        axis=-1,
    )
    return features.astype(np.float32)


@numpy_compatible
def recover_root(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrate the root: ``(..., T, 4)`` Y-rotation quaternions and ``(..., T, 3)`` positions."""
    rot_velocity = features[..., 0]
    angle = torch.zeros_like(rot_velocity)
    angle[..., 1:] = rot_velocity[..., :-1]
    angle = torch.cumsum(angle, dim=-1)
    zeros = torch.zeros_like(angle)
    root_quat = torch.stack([torch.cos(angle), zeros, torch.sin(angle), zeros], dim=-1)

    velocity = torch.zeros(features.shape[:-1] + (3,), dtype=features.dtype, device=features.device)
    velocity[..., 1:, 0] = features[..., :-1, 1]
    velocity[..., 1:, 2] = features[..., :-1, 2]
    root_pos = torch.cumsum(quat_rotate(quat_inv(root_quat), velocity), dim=-2)
    root_pos[..., 1] = features[..., 3]
    return root_quat, root_pos


@numpy_compatible
def features_to_joints(features: torch.Tensor, num_joints: int = NUM_JOINTS) -> torch.Tensor:
    """Joint positions from features (HumanML3D's ``recover_from_ric``).

    Args:
        features: ``(..., T, D)`` un-normalised features (D = 263 for 22 joints).

    Returns:
        ``(..., T, num_joints, 3)`` positions. Batched; padding rows give garbage
        joints for those rows only (each frame depends on earlier frames alone).
    """
    expected = feature_dim(num_joints)
    if features.shape[-1] != expected:
        raise ValueError(f"features must have width {expected} for {num_joints} joints, got shape {tuple(features.shape)}")
    root_quat, root_pos = recover_root(features)
    ric = features[..., 4 : 4 + (num_joints - 1) * 3].reshape(features.shape[:-1] + (num_joints - 1, 3))
    positions = quat_rotate(quat_inv(root_quat)[..., None, :], ric)
    positions = positions + (root_pos * root_pos.new_tensor([1.0, 0.0, 1.0]))[..., None, :]
    return torch.cat([root_pos[..., None, :], positions], dim=-2)


class Normalizer:
    """Z-scores features with a dataset's ``Mean.npy`` / ``Std.npy``.

    Works on numpy arrays and torch tensors of any leading shape.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, eps: float = 1e-8):
        mean, std = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
        if mean.shape != std.shape or mean.ndim != 1:
            raise ValueError(f"mean and std must be 1-D of equal width, got {mean.shape} and {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ValueError("mean/std contain NaN or Inf")
        if (std <= 0).any():
            raise ValueError(f"std must be positive; zero at feature indices {np.flatnonzero(std <= 0)[:10].tolist()}")
        self.mean, self.std, self.eps = mean, std, eps

    @classmethod
    def from_dir(cls, root: str | Path) -> Normalizer:
        root = Path(root)
        arrays = []
        for name in ("Mean.npy", "Std.npy"):
            path = root / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; a HumanML3D-layout dataset needs Mean.npy and Std.npy")
            arrays.append(np.load(path, allow_pickle=False))
        return cls(*arrays)

    def _stats(self, like):
        if isinstance(like, torch.Tensor):
            return torch.as_tensor(self.mean, device=like.device, dtype=like.dtype), torch.as_tensor(
                self.std, device=like.device, dtype=like.dtype
            )
        return self.mean, self.std

    def normalize(self, features):
        mean, std = self._stats(features)
        return (features - mean) / (std + self.eps)

    def denormalize(self, features):
        mean, std = self._stats(features)
        return features * (std + self.eps) + mean


class FeatureStatsMixin:
    """``set_normalizer`` / ``normalize`` / ``denormalize`` for a model that keeps the dataset's
    feature Mean/Std in ``feature_mean`` / ``feature_std`` buffers (width ``config.feature_dim``)."""

    def set_normalizer(self, mean, std) -> None:
        """Store the dataset's feature mean/std (arrays or tensors of shape (D,)) in the model."""
        normalizer = Normalizer(
            mean.detach().cpu().numpy() if isinstance(mean, torch.Tensor) else mean,
            std.detach().cpu().numpy() if isinstance(std, torch.Tensor) else std,
        )  # validates finiteness and positivity
        if normalizer.mean.shape != (self.config.feature_dim,):
            raise ValueError(f"mean/std must have shape ({self.config.feature_dim},), got {normalizer.mean.shape}")
        self.feature_mean.copy_(torch.from_numpy(normalizer.mean))
        self.feature_std.copy_(torch.from_numpy(normalizer.std))

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """Raw features (..., D) -> z-scored with the stored mean/std."""
        return (features - self.feature_mean) / self.feature_std

    def denormalize(self, features: torch.Tensor) -> torch.Tensor:
        """Normalised features (..., D) -> raw."""
        return features * self.feature_std + self.feature_mean


def length_batches(lengths: torch.Tensor, batch_size: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Row indices in batches of ``batch_size`` rows of similar length, and the permutation that puts
    the batches' concatenated per-row results back in input order.

    For models that read a row's valid frames only: cut each batch to its own longest row, and a
    recurrent or windowed model runs over fewer padded frames than in one padded batch.
    """
    order = torch.argsort(lengths, stable=True)
    return list(order.split(batch_size)), torch.argsort(order)


def compute_mean_std(features: list[np.ndarray], num_joints: int = NUM_JOINTS) -> tuple[np.ndarray, np.ndarray]:
    """Dataset statistics as HumanML3D computes them (see :func:`mean_std_from_moments`)."""
    data = np.concatenate(features, axis=0).astype(np.float64)
    return mean_std_from_moments(len(data), data.sum(0), (data**2).sum(0), num_joints)


def mean_std_from_moments(
    count: int, total: np.ndarray, total_sq: np.ndarray, num_joints: int = NUM_JOINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and HumanML3D's grouped std from frame count, per-feature sums and sums of squares.

    Every feature group (root rotation velocity, root velocity, height, ric, 6D rotations,
    local velocities, contacts) shares one std, the mean of its per-feature stds, which keeps
    the group's internal proportions. Moments let workers summarise clips without shipping them.
    """
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    j = num_joints
    bounds = [0, 1, 3, 4, 4 + (j - 1) * 3, 4 + (j - 1) * 9, 4 + (j - 1) * 9 + j * 3, len(mean)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        std[lo:hi] = std[lo:hi].mean()
    std = np.where(std > 0, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)
