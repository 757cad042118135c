"""The 22-joint HumanML3D skeleton (SMPL's first 22 joints) and forward kinematics.

HumanML3D retargets every clip to one target skeleton. Its bone lengths are
measured from the public clip ``012314`` (they are constant to 1e-7 m there),
and the rest directions are SMPL's T-pose: Y up, the body facing +Z, its left
hand along +X. The procedural data, the BVH export and the joints->SMPL
converter all drive this skeleton by per-joint *local* rotations, SMPL-style:
24 joints (the two hand joints are kept at rest) plus a root translation.
"""

from __future__ import annotations

import numpy as np
import torch

from motion_env.rotations import numpy_compatible, quat_to_matrix

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
NUM_JOINTS = 22  # HumanML3D keeps SMPL's first 22
NUM_SMPL_JOINTS = 24
JOINT_INDEX = {name: i for i, name in enumerate(JOINT_NAMES)}

# SMPL's kinematic tree over 24 joints; the first 22 entries are HumanML3D's.
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
KINEMATIC_CHAIN = ((0, 2, 5, 8, 11), (0, 1, 4, 7, 10), (0, 3, 6, 9, 12, 15), (9, 14, 17, 19, 21), (9, 13, 16, 18, 20))

FPS = 20.0
LEFT_FOOT = (7, 10)  # ankle, toe
RIGHT_FOOT = (8, 11)
FEET = LEFT_FOOT + RIGHT_FOOT
FACE_JOINTS = (2, 1, 17, 16)  # r_hip, l_hip, r_shoulder, l_shoulder

# Bone lengths (metres) of HumanML3D's target skeleton, child joint -> length.
# The hand joints (22, 23) are not in HumanML3D; SMPL's template puts them ~8.5 cm past the wrist.
BONE_LENGTHS = {
    1: 0.1031, 2: 0.1099, 3: 0.1316, 4: 0.3936, 5: 0.3902, 6: 0.1432, 7: 0.4324, 8: 0.4256,
    9: 0.0574, 10: 0.1434, 11: 0.1494, 12: 0.2194, 13: 0.1375, 14: 0.1434, 15: 0.1030,
    16: 0.1316, 17: 0.1230, 18: 0.2568, 19: 0.2631, 20: 0.2660, 21: 0.2699, 22: 0.0850, 23: 0.0850,
}  # fmt: skip

# SMPL's neutral template joints (metres); only their directions are used.
_SMPL_TEMPLATE_JOINTS = np.array([
    [-0.0018, -0.2233, 0.0282], [0.0695, -0.3141, 0.0239], [-0.0677, -0.3147, 0.0214],
    [-0.0025, -0.1040, 0.0166], [0.1038, -0.6998, 0.0156], [-0.1060, -0.7045, 0.0114],
    [0.0054, 0.0334, 0.0428], [0.0885, -1.1019, -0.0262], [-0.0918, -1.1013, -0.0305],
    [0.0011, 0.0856, 0.0500], [0.1193, -1.1556, 0.0964], [-0.1201, -1.1543, 0.1005],
    [-0.0008, 0.2967, 0.0218], [0.0796, 0.1880, 0.0325], [-0.0802, 0.1879, 0.0286],
    [0.0055, 0.3686, 0.0780], [0.1723, 0.2274, 0.0174], [-0.1674, 0.2278, 0.0162],
    [0.4325, 0.2182, -0.0092], [-0.4224, 0.2151, -0.0152], [0.6981, 0.2223, -0.0123],
    [-0.6968, 0.2219, -0.0167], [0.7859, 0.2165, -0.0323], [-0.7892, 0.2128, -0.0379],
])  # fmt: skip


def _rest_offsets() -> np.ndarray:
    offsets = np.zeros((NUM_SMPL_JOINTS, 3))
    for j in range(1, NUM_SMPL_JOINTS):
        direction = _SMPL_TEMPLATE_JOINTS[j] - _SMPL_TEMPLATE_JOINTS[PARENTS[j]]
        offsets[j] = direction / np.linalg.norm(direction) * BONE_LENGTHS[j]
    return offsets


REST_OFFSETS = _rest_offsets()  # (24, 3) offset of each joint from its parent, T-pose
REST_OFFSETS.setflags(write=False)


def rest_joints(num_joints: int = NUM_SMPL_JOINTS) -> np.ndarray:
    """T-pose joint positions with the pelvis at the origin, shape ``(num_joints, 3)``."""
    joints = np.zeros((NUM_SMPL_JOINTS, 3))
    for j in range(1, NUM_SMPL_JOINTS):
        joints[j] = joints[PARENTS[j]] + REST_OFFSETS[j]
    return joints[:num_joints]


@numpy_compatible
def forward_kinematics(
    local_quats: torch.Tensor, root_positions: torch.Tensor, offsets: torch.Tensor | None = None
) -> torch.Tensor:
    """Joint positions from per-joint local rotations.

    Args:
        local_quats: ``(..., J, 4)`` rotation of each joint relative to its parent
            (the root's is global), ``J`` = 22 or 24.
        root_positions: ``(..., 3)`` world position of the pelvis.
        offsets: ``(J, 3)`` rest offsets; the target skeleton's by default.

    Returns:
        ``(..., J, 3)`` world joint positions.
    """
    num_joints = local_quats.shape[-2]
    if num_joints not in (NUM_JOINTS, NUM_SMPL_JOINTS):
        raise ValueError(f"local_quats must have 22 or 24 joints on axis -2, got shape {tuple(local_quats.shape)}")
    if offsets is None:
        offsets = torch.tensor(REST_OFFSETS[:num_joints], dtype=local_quats.dtype, device=local_quats.device)
    local = quat_to_matrix(local_quats)  # (..., J, 3, 3)
    rots = [local[..., 0, :, :]]
    positions = [root_positions]
    for j in range(1, num_joints):
        parent = PARENTS[j]
        positions.append(positions[parent] + rots[parent] @ offsets[j])
        rots.append(rots[parent] @ local[..., j, :, :])
    return torch.stack(positions, dim=-2)


@numpy_compatible
def global_rotations(local_quats: torch.Tensor) -> torch.Tensor:
    """``(..., J, 3, 3)`` world rotation of each joint from local quaternions ``(..., J, 4)``."""
    local = quat_to_matrix(local_quats)
    out = [local[..., 0, :, :]]
    for j in range(1, local_quats.shape[-2]):
        out.append(out[PARENTS[j]] @ local[..., j, :, :])
    return torch.stack(out, dim=-3)


def bone_lengths(joints: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``(..., 21)`` length of each of the 21 bones of a 22-joint pose ``(..., 22, 3)``."""
    parents = list(PARENTS[1:NUM_JOINTS])
    diff = joints[..., 1:NUM_JOINTS, :] - joints[..., parents, :]
    return (diff**2).sum(-1) ** 0.5
