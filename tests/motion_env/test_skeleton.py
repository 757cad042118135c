import numpy as np
import pytest
import torch

from motion_env import rotations as R
from motion_env.skeleton import (
    BONE_LENGTHS,
    JOINT_NAMES,
    KINEMATIC_CHAIN,
    PARENTS,
    bone_lengths,
    forward_kinematics,
    global_rotations,
    rest_joints,
)


def test_chain_agrees_with_parents():
    for limb in KINEMATIC_CHAIN:
        for parent, child in zip(limb[:-1], limb[1:]):
            assert PARENTS[child] == parent


def test_bone_lengths_match_the_real_clip(humanml3d_fixture):
    joints = np.load(humanml3d_fixture / "new_joints" / "012314.npy")
    measured = bone_lengths(joints).mean(0)
    expected = np.array([BONE_LENGTHS[j] for j in range(1, 22)])
    np.testing.assert_allclose(measured, expected, atol=1e-3)


def test_rest_pose_faces_z_with_left_on_plus_x():
    joints = rest_joints()
    left, right = JOINT_NAMES.index("left_wrist"), JOINT_NAMES.index("right_wrist")
    assert joints[left, 0] > 0.5 and joints[right, 0] < -0.5  # T-pose arms along X
    assert joints[JOINT_NAMES.index("head"), 1] > 0.4 and joints[JOINT_NAMES.index("left_foot"), 1] < -0.8
    assert joints[JOINT_NAMES.index("left_foot"), 2] > joints[JOINT_NAMES.index("left_ankle"), 2]  # toes forward


def test_identity_rotations_give_rest_pose_and_bones_never_stretch():
    identity = np.tile([1.0, 0, 0, 0], (5, 24, 1))
    joints = forward_kinematics(identity, np.zeros((5, 3)))
    np.testing.assert_allclose(joints[0], rest_joints(), atol=1e-12)
    random = R.quat_normalize(np.random.default_rng(0).normal(size=(5, 24, 4)))
    posed = forward_kinematics(random, np.ones((5, 3)))
    np.testing.assert_allclose(bone_lengths(posed[:, :22]), bone_lengths(joints[:, :22]), atol=1e-12)


def test_fk_rotates_children_with_parent():
    quats = np.tile([1.0, 0, 0, 0], (1, 22, 1))
    quats[0, 16] = R.axis_angle_to_quat(np.array([0.0, 0.0, np.pi / 2]))  # left shoulder, about +Z
    joints = forward_kinematics(quats, np.zeros((1, 3)))[0]
    upper_arm = joints[18] - joints[16]
    assert upper_arm[1] > 0.25  # +X arm rotated +90 deg about Z points up
    assert np.allclose(global_rotations(quats)[0, 20], R.quat_to_matrix(quats[0, 16]), atol=1e-12)


def test_fk_batched_torch_and_error():
    quats = R.quat_normalize(torch.randn(2, 3, 22, 4, dtype=torch.float64))
    joints = forward_kinematics(quats, torch.zeros(2, 3, 3, dtype=torch.float64))
    assert joints.shape == (2, 3, 22, 3)
    with pytest.raises(ValueError, match="22 or 24 joints"):
        forward_kinematics(quats[..., :5, :], torch.zeros(2, 3, 3))
