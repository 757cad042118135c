"""A body driven by local rotations: anatomical joint actions and two-bone IK.

Angles are radians, scalars or per-frame arrays. Signs follow the HumanML3D / SMPL
frame (Y up, the body faces +Z, its left is +X) and are named anatomically, so a
primitive says ``hip_flex("left", 0.5)`` instead of a signed rotation about X.
"""

from __future__ import annotations

import numpy as np

from motion_env.rotations import matrix_to_quat, quat_between, quat_mul, quat_rotate, quat_to_matrix
from motion_env.skeleton import NUM_SMPL_JOINTS, PARENTS, REST_OFFSETS

X_AXIS, Y_AXIS, Z_AXIS = np.eye(3)
SIDE_SIGN = {"left": 1.0, "right": -1.0}
HIP = {"left": 1, "right": 2}
KNEE = {"left": 4, "right": 5}
ANKLE = {"left": 7, "right": 8}
COLLAR = {"left": 13, "right": 14}
SHOULDER = {"left": 16, "right": 17}
ELBOW = {"left": 18, "right": 19}
WRIST = {"left": 20, "right": 21}
SPINE = (3, 6, 9)

# Stance codes for the root solver (see compose.py).
AUTO, LEFT_STANCE, RIGHT_STANCE, AIRBORNE = -1, 0, 1, 2


def axis_angle(axis: np.ndarray, angle) -> np.ndarray:
    """``(T, 4)`` quaternions for rotations by ``angle`` (scalar or (T,)) about a fixed axis."""
    half = np.asarray(angle, dtype=np.float64)[..., None] / 2
    return np.concatenate([np.cos(half), np.sin(half) * axis], axis=-1)


class Body:
    """Per-frame local rotations of the 24 SMPL joints plus the root's plan.

    Attributes:
        local: ``(T, 24, 4)`` local quaternions; the pelvis entry holds pelvis tilt only,
            the heading lives in ``yaw``.
        yaw: ``(T,)`` heading about +Y (radians, counter-clockwise seen from above).
        flight: ``(T,)`` height of the body above its feet-on-floor height (ballistic phases).
        stance: ``(T,)`` which foot carries the body (``AUTO`` = the lowest one).
        air_velocity: ``(T, 2)`` world x/z velocity (m/s) while airborne; NaN = keep the take-off velocity.
        root_path: ``(T, 3)`` pelvis positions authored by the primitive (segment frame), or None
            to let the compose step move the root by foot locking.
    """

    def __init__(self, num_frames: int):
        self.num_frames = num_frames
        self.local = np.zeros((num_frames, NUM_SMPL_JOINTS, 4))
        self.local[..., 0] = 1.0
        self.yaw = np.zeros(num_frames)
        self.flight = np.zeros(num_frames)
        self.stance = np.full(num_frames, AUTO, dtype=np.int64)
        self.air_velocity = np.full((num_frames, 2), np.nan)
        self.root_path: np.ndarray | None = None

    @property
    def t(self) -> np.ndarray:
        from motion_env.skeleton import FPS

        return np.arange(self.num_frames) / FPS

    def rotate(self, joint: int, axis: np.ndarray, angle) -> None:
        """Post-multiply a joint's local rotation (a rotation in its parent-aligned frame)."""
        self.local[:, joint] = quat_mul(self.local[:, joint], axis_angle(axis, np.broadcast_to(angle, self.num_frames)))

    # --- legs -----------------------------------------------------------------------------
    def hip_flex(self, side: str, angle) -> None:
        """Thigh forward/up for positive angles, backward (extension) for negative."""
        self.rotate(HIP[side], X_AXIS, -np.asarray(angle))

    def hip_abduct(self, side: str, angle) -> None:
        """Thigh away from the midline for positive angles."""
        self.rotate(HIP[side], Z_AXIS, SIDE_SIGN[side] * np.asarray(angle))

    def hip_twist(self, side: str, angle) -> None:
        """Toes outward for positive angles."""
        self.rotate(HIP[side], Y_AXIS, SIDE_SIGN[side] * np.asarray(angle))

    def knee_flex(self, side: str, angle) -> None:
        """Shin backward; knees only bend one way, so negative angles are clipped."""
        self.rotate(KNEE[side], X_AXIS, np.clip(angle, 0.0, None))

    def ankle_flex(self, side: str, angle) -> None:
        """Toes up (dorsiflexion) for positive angles, pointed for negative."""
        self.rotate(ANKLE[side], X_AXIS, -np.asarray(angle))

    # --- trunk and head ---------------------------------------------------------------------
    def spine_bend(self, forward=0.0, left=0.0, twist_left=0.0) -> None:
        """Bend the trunk, spread over the three spine joints."""
        for joint in SPINE:
            self.rotate(joint, X_AXIS, np.asarray(forward) / 3)
            self.rotate(joint, Z_AXIS, -np.asarray(left) / 3)
            self.rotate(joint, Y_AXIS, np.asarray(twist_left) / 3)

    def pelvis_tilt(self, forward=0.0, left=0.0, twist_left=0.0) -> None:
        self.rotate(0, X_AXIS, np.asarray(forward))
        self.rotate(0, Z_AXIS, -np.asarray(left))
        self.rotate(0, Y_AXIS, np.asarray(twist_left))

    def head_turn(self, down=0.0, left=0.0) -> None:
        self.rotate(12, X_AXIS, np.asarray(down) * 0.5)
        self.rotate(15, X_AXIS, np.asarray(down) * 0.5)
        self.rotate(12, Y_AXIS, np.asarray(left))

    def shrug(self, side: str, angle) -> None:
        self.rotate(COLLAR[side], Z_AXIS, SIDE_SIGN[side] * np.asarray(angle))

    # --- kinematics ---------------------------------------------------------------------------
    def global_frames(self, end: int) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """World rotations ``{joint: (T, 3, 3)}`` and positions ``{joint: (T, 3)}`` of the joints from the
        pelvis down to ``end`` (that chain only), pelvis at the origin, heading excluded."""
        chain = [end]
        while chain[-1] != 0:
            chain.append(PARENTS[chain[-1]])
        chain.reverse()  # pelvis first
        local = quat_to_matrix(self.local[:, chain])  # (T, len(chain), 3, 3)
        rots, pos = {0: local[:, 0]}, {0: np.zeros((self.num_frames, 3))}
        for i, j in enumerate(chain[1:], start=1):
            parent = PARENTS[j]
            pos[j] = pos[parent] + rots[parent] @ REST_OFFSETS[j]
            rots[j] = rots[parent] @ local[:, i]
        return rots, pos

    def reach(self, side: str, target, pole, frame: str = "chest") -> None:
        """Place a wrist at ``target`` by two-bone IK (shoulder + elbow), elbow toward ``pole``.

        Args:
            target: ``(3,)`` or ``(T, 3)`` wrist position relative to the chest joint (spine3) in
                the chest's axes (``frame="chest"``), relative to the chest in the heading's axes
                (``frame="chest_upright"``: arms that hang whatever the trunk does), or relative to
                the pelvis in the heading's axes (``frame="heading"``).
            pole: direction the elbow points, same axes.
        """
        shoulder, elbow, wrist, collar = SHOULDER[side], ELBOW[side], WRIST[side], COLLAR[side]
        rots, pos = self.global_frames(shoulder)
        if frame == "chest":
            frame_rot, origin = rots[9], pos[9]
        elif frame == "heading":
            frame_rot, origin = np.broadcast_to(np.eye(3), rots[0].shape), pos[0]
        elif frame == "chest_upright":
            frame_rot, origin = np.broadcast_to(np.eye(3), rots[0].shape), pos[9]
        else:
            raise ValueError(f"frame must be 'chest', 'chest_upright' or 'heading', got {frame!r}")
        target_world = origin + _apply(frame_rot, np.broadcast_to(target, (self.num_frames, 3)))
        pole_world = _apply(frame_rot, np.broadcast_to(pole, (self.num_frames, 3)))
        self._two_bone(collar, shoulder, elbow, wrist, pos[shoulder], rots[collar], target_world, pole_world,
                       bend_rest=Z_AXIS)  # fmt: skip

    def plant_foot(self, side: str, target, flat: bool = True, foot_yaw=0.0) -> None:
        """Put an ankle at ``target`` by IK, knee pointing forward.

        ``target`` is relative to the pelvis in the heading's axes (untilted), so a pelvis that
        pitches forward does not swing the feet with it. A flat foot points along the heading,
        turned by ``foot_yaw`` (radians, + = toes to the left).
        """
        hip, knee, ankle = HIP[side], KNEE[side], ANKLE[side]
        rots, pos = self.global_frames(ankle)
        target_world = pos[0] + np.broadcast_to(target, (self.num_frames, 3))
        pole_world = np.broadcast_to(np.array([SIDE_SIGN[side] * 0.15, 0.0, 1.0]), (self.num_frames, 3))
        # Knees bend backward: the bend plane's rest direction is -Z for the shin.
        self._two_bone(0, hip, knee, ankle, pos[hip], rots[0], target_world, pole_world, bend_rest=-Z_AXIS)
        if flat:
            rots, _ = self.global_frames(knee)
            # Foot level with the floor, pointing the way the body faces (plus its own yaw).
            foot = quat_to_matrix(axis_angle(Y_AXIS, np.broadcast_to(foot_yaw, (self.num_frames,))))
            self.local[:, ankle] = matrix_to_quat(np.swapaxes(rots[knee], -1, -2) @ foot)

    def _two_bone(self, parent, upper, lower, end, base, parent_rot, target, pole, bend_rest) -> None:
        len_upper = np.linalg.norm(REST_OFFSETS[lower])
        len_lower = np.linalg.norm(REST_OFFSETS[end])
        to_target = target - base
        dist = np.linalg.norm(to_target, axis=-1, keepdims=True)
        u = to_target / np.maximum(dist, 1e-9)
        dist = np.clip(dist, abs(len_upper - len_lower) + 1e-3, len_upper + len_lower - 1e-4)
        cos_a = (len_upper**2 + dist**2 - len_lower**2) / (2 * len_upper * dist)
        v = pole - (pole * u).sum(-1, keepdims=True) * u
        v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)
        mid = base + len_upper * (cos_a * u + np.sqrt(1 - cos_a**2) * v)
        end_pos = base + dist * u

        a = REST_OFFSETS[lower] / len_upper
        b = bend_rest - (bend_rest @ a) * a
        b /= np.linalg.norm(b)
        e1 = (mid - base) / len_upper
        fore = end_pos - mid
        b1 = fore - (fore * e1).sum(-1, keepdims=True) * e1
        b1 = b1 / np.maximum(np.linalg.norm(b1, axis=-1, keepdims=True), 1e-9)
        world_upper = np.stack([e1, b1, np.cross(e1, b1)], -1) @ np.stack([a, b, np.cross(a, b)], -1).T
        upper_local = np.swapaxes(parent_rot, -1, -2) @ world_upper
        self.local[:, upper] = matrix_to_quat(upper_local)
        fore_local = _apply(np.swapaxes(world_upper, -1, -2), fore / len_lower)
        self.local[:, lower] = quat_between(
            np.broadcast_to(REST_OFFSETS[end] / len_lower, fore_local.shape), fore_local
        )


def _apply(rot: np.ndarray, vec: np.ndarray) -> np.ndarray:
    return (rot @ vec[..., None])[..., 0]


def world_joints(local: np.ndarray, yaw: np.ndarray, root: np.ndarray) -> np.ndarray:
    """``(T, 24, 3)`` joints with the heading applied and the pelvis at ``root``."""
    from motion_env.skeleton import forward_kinematics

    quats = local.copy()
    quats[:, 0] = quat_mul(axis_angle(Y_AXIS, yaw), local[:, 0])
    return forward_kinematics(quats, root)


__all__ = ["Body", "axis_angle", "world_joints", "quat_rotate"]
