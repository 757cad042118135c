"""From a list of primitives to one clip: blend segments, move the root by foot locking,
and express the result in HumanML3D's canonical frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from motion_env.features import canonical_transform
from motion_env.procedural.base import Primitive, Style
from motion_env.procedural.body import AIRBORNE, AUTO, LEFT_STANCE, RIGHT_STANCE, Y_AXIS, Body, axis_angle
from motion_env.procedural.timing import minimum_jerk
from motion_env.rotations import quat_mul, quat_rotate, quat_slerp
from motion_env.skeleton import FPS, LEFT_FOOT, NUM_JOINTS, RIGHT_FOOT, forward_kinematics

BLEND_SECONDS = 0.4
_FOOT_JOINTS = np.array(LEFT_FOOT + RIGHT_FOOT)  # left ankle, left toe, right ankle, right toe
_HYSTERESIS = 0.005  # metres a foot joint must be lower by to take over the support


@dataclass
class Clip:
    """One synthesised clip in the canonical frame.

    Attributes:
        local_quats: ``(T, 24, 4)`` SMPL-style local rotations; the pelvis entry is global.
        root: ``(T, 3)`` pelvis positions.
        joints: ``(T, 24, 3)`` forward kinematics of the above.
        segments: ``(start_frame, end_frame)`` of each primitive inside the clip.
    """

    local_quats: np.ndarray
    root: np.ndarray
    joints: np.ndarray
    segments: list[tuple[int, int]]


def render_segment(primitive: Primitive, params: dict, style: Style) -> Body:
    body = Body(primitive.num_frames(params, style))
    primitive.animate(body, params, style)
    return body


def concatenate(bodies: list[Body], blend_frames: int) -> tuple[Body, list[tuple[int, int]]]:
    """Chain segments, cross-fading local rotations over ``blend_frames`` (slerp, min-jerk weight).

    Headings accumulate: each segment's yaw continues from where the previous one ended.
    """
    total = sum(b.num_frames for b in bodies) - blend_frames * (len(bodies) - 1)
    out = Body(total)
    out.stance[:] = AUTO
    out.root_path = np.full((total, 3), np.nan)  # here: authored per-frame (dx, height, dz), world axes
    cursor, heading = 0, 0.0
    segments = []
    for i, body in enumerate(bodies):
        n = body.num_frames
        span = slice(cursor, cursor + n)
        yaw = body.yaw + heading
        if i == 0:
            out.local[span], out.yaw[span] = body.local, yaw
        else:
            w = minimum_jerk((np.arange(blend_frames) + 1) / (blend_frames + 1))
            head = slice(cursor, cursor + blend_frames)
            out.local[head] = quat_slerp(out.local[head], body.local[:blend_frames], w[:, None])
            out.yaw[head] = out.yaw[head] * (1 - w) + yaw[:blend_frames] * w
            out.local[cursor + blend_frames : cursor + n] = body.local[blend_frames:]
            out.yaw[cursor + blend_frames : cursor + n] = yaw[blend_frames:]
        inner = slice(cursor + (blend_frames if i else 0), cursor + n)
        own = slice(blend_frames if i else 0, n)
        out.flight[inner] = body.flight[own]
        out.stance[inner] = body.stance[own]
        # Air velocities are authored in the segment's heading frame; keep them there for now.
        out.air_velocity[inner] = _rotate_xz(body.air_velocity[own], heading)
        if body.root_path is not None:
            step = np.diff(body.root_path, axis=0, prepend=body.root_path[:1])
            step[:, [0, 2]] = _rotate_xz(step[:, [0, 2]], heading)
            step[:, 1] = body.root_path[:, 1]
            out.root_path[inner] = step[own]
        segments.append((cursor, cursor + n))
        heading = yaw[-1]
        cursor += n - blend_frames
    return out, segments


def _rotate_xz(v: np.ndarray, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], -1)


def solve_root(body: Body) -> tuple[np.ndarray, np.ndarray]:
    """Root positions by foot locking, and the heading-applied local rotations.

    While a foot carries the body, it does not move in the world: the root moves instead. The root height puts the lowest foot joint on the floor, plus any ballistic flight.
    Airborne frames keep the horizontal velocity of take-off (or the authored one).

    Returns:
        ``(T, 3)`` root positions and ``(T, 24, 4)`` local rotations with the heading in the pelvis.
    """
    quats = body.local.copy()
    quats[:, 0] = quat_mul(axis_angle(Y_AXIS, body.yaw), body.local[:, 0])
    relative = forward_kinematics(quats[:, :NUM_JOINTS], np.zeros((body.num_frames, 3)))  # (T, 22, 3)
    feet = relative[:, _FOOT_JOINTS]  # (T, 4, 3)
    root = np.zeros((body.num_frames, 3))
    root[:, 1] = -feet[..., 1].min(-1) + body.flight

    authored = body.root_path if body.root_path is not None else np.full((body.num_frames, 3), np.nan)
    root[:, 1] = np.where(np.isfinite(authored[:, 1]), authored[:, 1], root[:, 1])
    velocity = np.zeros(2)
    contact = int(np.argmin(feet[0, :, 1]))
    for t in range(1, body.num_frames):
        if np.isfinite(authored[t, 0]):
            root[t, [0, 2]] = root[t - 1, [0, 2]] + authored[t, [0, 2]]
            velocity = authored[t, [0, 2]] * FPS
        elif body.stance[t] == AIRBORNE:
            air = body.air_velocity[t]
            root[t, [0, 2]] = root[t - 1, [0, 2]] + (air if np.isfinite(air).all() else velocity) / FPS
        else:
            # The carrying foot joint keeps its place; a new joint takes over only when it is
            # clearly lower (hysteresis), or when the primitive names the other foot.
            candidates = {AUTO: (0, 1, 2, 3), LEFT_STANCE: (0, 1), RIGHT_STANCE: (2, 3)}[body.stance[t]]
            heights = feet[t, :, 1]
            lowest = min(candidates, key=lambda j: heights[j])
            if contact not in candidates or heights[lowest] < heights[contact] - _HYSTERESIS:
                contact = lowest
            delta = feet[t, contact, [0, 2]] - feet[t - 1, contact, [0, 2]]
            root[t, [0, 2]] = root[t - 1, [0, 2]] - delta
            velocity = -delta * FPS
    return root, quats


def to_canonical(quats: np.ndarray, root: np.ndarray) -> Clip:
    """Move a clip into the frame HumanML3D's processing puts it in (floor, origin, facing +Z)."""
    joints = forward_kinematics(quats, root)
    shift, yaw = canonical_transform(joints[:, :NUM_JOINTS])
    quats = quats.copy()
    quats[:, 0] = quat_mul(yaw, quats[:, 0])
    # A rigid move of the whole clip: move the joints too rather than run FK again.
    return Clip(local_quats=quats, root=quat_rotate(yaw, root + shift), joints=quat_rotate(yaw, joints + shift),
                segments=[])


def synthesize(plan: list[tuple[Primitive, dict]], style: Style) -> Clip:
    """Render, blend, root-solve and canonicalise a sequence of primitives."""
    blend_frames = int(round(BLEND_SECONDS * FPS))
    bodies = [render_segment(primitive, params, style) for primitive, params in plan]
    body, segments = concatenate(bodies, blend_frames)
    root, quats = solve_root(body)
    clip = to_canonical(quats, root)
    clip.segments = segments
    return clip
