"""What a motion primitive is, the per-clip style, and the neutral standing pose."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from motion_env.procedural.body import Body
from motion_env.procedural.timing import smooth_noise
from motion_env.skeleton import FPS, rest_joints

SIDES = ("left", "right")
_REST = rest_joints()
# Rest ankles relative to the pelvis; legs a touch bent so IK-planted feet never lock straight.
ANKLE_REST = {"left": _REST[7] + [0.0, 0.012, 0.0], "right": _REST[8] + [0.0, 0.012, 0.0]}


@dataclass(frozen=True)
class Style:
    """Per-clip randomness that changes how a motion looks, never what it means."""

    tempo: float = 1.0  # >1 is slower: durations are multiplied by it
    amplitude: float = 1.0
    lean: float = 0.0  # trunk pitch, radians
    head_pitch: float = 0.0
    arm_out: float = 0.0  # rest hands away from the thighs, metres
    stance_width: float = 0.0  # metres added to each foot's lateral offset
    noise: float = 0.01  # radians of slow drift on trunk and head
    seed: int = 0

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Style:
        return cls(
            tempo=float(rng.uniform(0.85, 1.2)),
            amplitude=float(rng.uniform(0.85, 1.15)),
            lean=float(rng.normal(0.0, 0.04)),
            head_pitch=float(rng.normal(0.0, 0.06)),
            arm_out=float(rng.uniform(0.0, 0.05)),
            stance_width=float(rng.uniform(-0.01, 0.03)),
            noise=float(rng.uniform(0.005, 0.015)),
            seed=int(rng.integers(2**31)),
        )


class Primitive:
    """One kind of motion: its parameters, its length, how it moves, and how people describe it.

    Subclasses define ``name``, ``sample(rng)``, ``duration(params, style)`` (seconds),
    ``animate(body, params, style)`` and ``phrases(params)``: verb phrases, all true of the
    motion, the *last* of which is held out of the training split.
    """

    name: str = ""

    def sample(self, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def duration(self, params: dict, style: Style) -> float:
        raise NotImplementedError

    def animate(self, body: Body, params: dict, style: Style) -> None:
        raise NotImplementedError

    def phrases(self, params: dict) -> list[str]:
        raise NotImplementedError

    def num_frames(self, params: dict, style: Style) -> int:
        return int(round(self.duration(params, style) * FPS))


def settle(body: Body, style: Style) -> None:
    """The standing posture every primitive starts from: trunk lean, head, slow drift."""
    rng = np.random.default_rng(style.seed + body.num_frames)
    n = body.num_frames
    body.spine_bend(forward=style.lean + smooth_noise(rng, n, style.noise), left=smooth_noise(rng, n, style.noise))
    body.head_turn(down=style.head_pitch + smooth_noise(rng, n, style.noise * 2),
                   left=smooth_noise(rng, n, style.noise * 3))  # fmt: skip


def stand_legs(body: Body, style: Style, left=None, right=None, foot_yaw=None) -> None:
    """Plant both feet by IK (feet flat); ``left``/``right`` override the ankle targets (T, 3),
    ``foot_yaw`` maps a side to its foot's yaw relative to the heading."""
    for side, target in (("left", left), ("right", right)):
        if target is None:
            target = ANKLE_REST[side] + [np.sign(ANKLE_REST[side][0]) * style.stance_width, 0.0, 0.0]
        body.plant_foot(side, target, foot_yaw=(foot_yaw or {}).get(side, 0.0))


def rest_wrist(side: str, style: Style) -> np.ndarray:
    """Where a relaxed hand hangs, relative to the chest (chest axes)."""
    sign = 1.0 if side == "left" else -1.0
    return np.array([sign * (0.2 + style.arm_out), -0.35, 0.06])


def elbow_back(side: str) -> np.ndarray:
    sign = 1.0 if side == "left" else -1.0
    return np.array([sign * 0.4, -0.2, -1.0])


def hang_arms(body: Body, style: Style, left=None, right=None, left_pole=None, right_pole=None) -> None:
    """Arms by IK: given wrist targets (chest-relative, (3,) or (T, 3)), the rest pose otherwise."""
    for side, target, pole in (("left", left, left_pole), ("right", right, right_pole)):
        body.reach(
            side,
            rest_wrist(side, style) if target is None else target,
            elbow_back(side) if pole is None else pole,
        )


def blend(weight: np.ndarray, rest: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Per-frame mix of two targets: ``(T,)`` weight, ``(3,)``/``(T, 3)`` targets."""
    weight = np.asarray(weight)[..., None]
    return rest * (1 - weight) + pose * weight
