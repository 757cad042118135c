"""Motion artifacts that people penalise, applied to clean joints at a graded severity.

The perception critic (``reward_models.critic``) has no human judgements to learn from by
default; it learns from pairs the project makes: a clean procedural clip is preferred over a
degraded copy of itself, and a mildly degraded copy over a strongly degraded one. Each artifact
here is a failure mode of generated motion that human raters single out:

============== =========================================================================
artifact        what changes (at severity ``s``, with the module's ``*_AT_FULL`` sizes)
============== =========================================================================
foot_sliding    while a foot is planted the whole body glides at ``s * 0.6`` m/s, so the
                planted foot skates over the floor
jitter          white noise of ``s * 3`` cm standard deviation on every joint and frame
floating        the whole body lifted ``s * 0.3`` m off the floor
penetration     the whole body sunk ``s * 0.3`` m into the floor
freezing        every 2 s the pose is held for ``s * 20`` frames (at least 2), then snaps
                back to where the motion has gone on to
jump_cut        every 2 s the clip skips ``s * 20`` frames (at least 1) back or forth and
                teleports ``s * 0.3`` m sideways
stretched_bones every bone scaled by ``1 +- s * 0.35 * u`` (``u`` in [0.5, 1], one sign per
                clip), the clip re-floored so that its lowest joint stays where it was
============== =========================================================================

Joints are HumanML3D's ``(T, 22, 3)``: metres, Y up, 20 fps. Every random choice (noise,
directions, event phases, bone factors) is drawn from ``rng`` *before* the severity is used,
and in the same order at every severity, so copies made with generators in the same state
differ only in how strong the artifact is; the size of each artifact grows monotonically with
the severity. The temporal artifacts repeat every :data:`EVENT_PERIOD` frames so that any
60-frame window of a degraded clip holds at least one whole event.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from motion_env.skeleton import FEET, FPS, NUM_JOINTS, PARENTS

ARTIFACTS = ("foot_sliding", "jitter", "floating", "penetration", "freezing", "jump_cut", "stretched_bones")
SEVERITIES = (0.25, 0.5, 0.75, 1.0)  # the graded levels the training and evaluation pairs use

SLIDE_SPEED_AT_FULL = 0.6  # m/s of glide while a foot is planted
JITTER_STD_AT_FULL = 0.03  # metres
FLOAT_HEIGHT_AT_FULL = 0.3  # metres
PENETRATION_DEPTH_AT_FULL = 0.3  # metres
FREEZE_FRAMES_AT_FULL = 20  # frames held per event
JUMP_FRAMES_AT_FULL = 20  # frames skipped per cut
JUMP_DISTANCE_AT_FULL = 0.3  # metres teleported per cut
STRETCH_AT_FULL = 0.35  # largest relative change of a bone's length
EVENT_PERIOD = 40  # frames between two freezes or two cuts (2 s)

# A foot joint is planted when it moves slower than this and is near the clip's lowest foot height.
PLANT_SPEED = 0.3  # m/s
PLANT_HEIGHT = 0.06  # metres above the lowest foot joint of the clip


def _check(joints: np.ndarray, artifact: str, severity: float) -> np.ndarray:
    if artifact not in ARTIFACTS:
        raise ValueError(f"unknown artifact {artifact!r}; expected one of {ARTIFACTS}")
    if not isinstance(severity, (int, float, np.floating, np.integer)) or not 0.0 < float(severity) <= 1.0:
        raise ValueError(f"severity must be a number in (0, 1], got {severity!r}")
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3) or len(joints) < 2:
        raise ValueError(f"joints must have shape (T>=2, {NUM_JOINTS}, 3), got {joints.shape}")
    if not np.isfinite(joints).all():
        raise ValueError("joints contain NaN or Inf")
    return joints


def _horizontal_direction(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0.0, 2 * np.pi)
    return np.array([np.cos(angle), 0.0, np.sin(angle)])


def planted(joints: np.ndarray) -> np.ndarray:
    """``(T,)`` bool: some foot joint is slow and low at that frame (velocity of the step into it)."""
    feet = joints[:, list(FEET)]  # (T, 4, 3)
    speed = np.linalg.norm(np.diff(feet, axis=0), axis=-1) * FPS  # (T-1, 4)
    speed = np.concatenate([speed[:1], speed])  # frame 0 takes the first step's speed
    low = feet[..., 1] <= feet[..., 1].min() + PLANT_HEIGHT  # (T, 4)
    return ((speed < PLANT_SPEED) & low).any(-1)


def _foot_sliding(joints, severity, rng):
    direction = _horizontal_direction(rng)
    contact = planted(joints)
    if not contact.any():  # an all-airborne clip still gets its glide, or the copy would equal the clean clip
        contact[:] = True
    step = severity * SLIDE_SPEED_AT_FULL / FPS * contact[1:, None] * direction  # (T-1, 3)
    drift = np.concatenate([np.zeros((1, 3)), np.cumsum(step, axis=0)])  # (T, 3)
    return joints + drift[:, None]


def _jitter(joints, severity, rng):
    noise = rng.standard_normal(joints.shape)  # (T, 22, 3)
    return joints + severity * JITTER_STD_AT_FULL * noise


def _floating(joints, severity, rng):
    return joints + np.array([0.0, severity * FLOAT_HEIGHT_AT_FULL, 0.0])


def _penetration(joints, severity, rng):
    return joints - np.array([0.0, severity * PENETRATION_DEPTH_AT_FULL, 0.0])


def _freeze_spans(num_frames: int, severity: float, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``[start, stop)`` spans, one per period; the phase leaves room for a full-severity span."""
    phase = int(rng.integers(0, EVENT_PERIOD - FREEZE_FRAMES_AT_FULL))
    hold = max(2, round(severity * FREEZE_FRAMES_AT_FULL))
    return [(s, min(s + hold, num_frames)) for s in range(phase, num_frames - 1, EVENT_PERIOD)]


def _freezing(joints, severity, rng):
    out = joints.copy()
    for start, stop in _freeze_spans(len(joints), severity, rng):
        out[start:stop] = joints[start]
    return out


def _jump_cut(joints, severity, rng):
    direction = _horizontal_direction(rng)
    # Cuts at phase + k * period; the first is at frame >= JUMP_FRAMES_AT_FULL, so reading `skip`
    # frames back never leaves the clip. Every other segment is read shifted and teleported:
    # the clip jumps back (and aside) at one cut and forward (and back in place) at the next.
    phase = int(rng.integers(JUMP_FRAMES_AT_FULL, EVENT_PERIOD))
    skip = max(1, round(severity * JUMP_FRAMES_AT_FULL))
    t = np.arange(len(joints))
    shifted = (t >= phase) & (((t - phase) // EVENT_PERIOD) % 2 == 0)  # (T,)
    source = np.where(shifted, t - skip, t)
    offset = shifted[:, None] * (severity * JUMP_DISTANCE_AT_FULL * direction)  # (T, 3)
    return joints[source] + offset[:, None]


def _stretched_bones(joints, severity, rng):
    sign = rng.choice([-1.0, 1.0])
    amount = rng.uniform(0.5, 1.0, size=NUM_JOINTS)  # per child joint; entry 0 (the root) is unused
    factors = 1.0 + sign * severity * STRETCH_AT_FULL * amount
    out = joints.copy()
    for j in range(1, NUM_JOINTS):  # parents come before children
        parent = PARENTS[j]
        out[:, j] = out[:, parent] + factors[j] * (joints[:, j] - joints[:, parent])
    out[..., 1] += joints[..., 1].min() - out[..., 1].min()
    return out


_DEGRADERS = {
    "foot_sliding": _foot_sliding,
    "jitter": _jitter,
    "floating": _floating,
    "penetration": _penetration,
    "freezing": _freezing,
    "jump_cut": _jump_cut,
    "stretched_bones": _stretched_bones,
}


def degrade(joints: np.ndarray, artifact: str, severity: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``joints`` (T, 22, 3) with ``artifact`` at ``severity`` in (0, 1].

    Deterministic given the state of ``rng``; the input is not modified. Returns float64.
    """
    joints = _check(joints, artifact, severity)
    return _DEGRADERS[artifact](joints, float(severity), rng)


def _check_severities(severities: Sequence[float]) -> tuple[float, ...]:
    levels = tuple(float(s) for s in severities)
    if not levels or any(not 0.0 < s <= 1.0 for s in levels) or list(levels) != sorted(set(levels)):
        raise ValueError(f"severities must be increasing values in (0, 1], got {tuple(severities)}")
    return levels


def degraded_versions(
    joints: np.ndarray,
    rng: np.random.Generator,
    artifacts: Sequence[str] = ARTIFACTS,
    severities: Sequence[float] = SEVERITIES,
) -> dict[tuple[str, float], np.ndarray]:
    """Every ``(artifact, severity)`` copy of one clip.

    One seed is drawn from ``rng`` per artifact and every severity of that artifact replays it,
    so the copies of an artifact share their noise, directions and event times.
    """
    levels = _check_severities(severities)
    versions = {}
    for artifact in artifacts:
        seed = int(rng.integers(2**63))
        for severity in levels:
            versions[artifact, severity] = degrade(joints, artifact, severity, np.random.default_rng(seed))
    return versions


class PairPlan(NamedTuple):
    """Which copy of a clip is preferred: keys of :func:`degraded_versions`, ``None`` = clean."""

    better: tuple[str, float] | None
    worse: tuple[str, float]
    artifact: str
    severity_better: float  # 0.0 for the clean clip
    severity_worse: float


def pair_plan(
    artifacts: Sequence[str] = ARTIFACTS, severities: Sequence[float] = SEVERITIES, severity_pairs: bool = True
) -> list[PairPlan]:
    """Clean vs each degraded copy, then (with ``severity_pairs``) each weaker vs each stronger copy."""
    levels = _check_severities(severities)
    unknown = [a for a in artifacts if a not in ARTIFACTS]
    if unknown:
        raise ValueError(f"unknown artifacts {unknown}; expected some of {ARTIFACTS}")
    plan = []
    for artifact in artifacts:
        plan += [PairPlan(None, (artifact, s), artifact, 0.0, s) for s in levels]
        if severity_pairs:
            plan += [
                PairPlan((artifact, a), (artifact, b), artifact, a, b)
                for i, a in enumerate(levels)
                for b in levels[i + 1 :]
            ]
    return plan


class PreferencePair(NamedTuple):
    """One preference: ``better`` (T, 22, 3) is preferred over ``worse`` (T, 22, 3)."""

    better: np.ndarray
    worse: np.ndarray
    artifact: str
    severity_better: float
    severity_worse: float


def preference_pairs(
    joints: np.ndarray,
    rng: np.random.Generator,
    artifacts: Sequence[str] = ARTIFACTS,
    severities: Sequence[float] = SEVERITIES,
    severity_pairs: bool = True,
) -> Iterator[PreferencePair]:
    """The preference pairs of one clean clip, in :func:`pair_plan` order."""
    clean = np.asarray(joints, dtype=np.float64)
    versions = degraded_versions(clean, rng, artifacts, severities)
    for plan in pair_plan(artifacts, severities, severity_pairs):
        better = clean if plan.better is None else versions[plan.better]
        yield PreferencePair(better, versions[plan.worse], plan.artifact, plan.severity_better, plan.severity_worse)
