"""Motion degradations: each artifact changes what it claims, grows with severity, and is reproducible."""

import itertools

import numpy as np
import pytest

from motion_env.procedural import PRIMITIVES
from motion_env.procedural.base import Style
from motion_env.procedural.compose import synthesize
from motion_env.procedural.degrade import (
    ARTIFACTS,
    EVENT_PERIOD,
    SEVERITIES,
    degrade,
    degraded_versions,
    pair_plan,
    planted,
    preference_pairs,
)
from motion_env.skeleton import FEET, FPS, bone_lengths


@pytest.fixture(scope="module")
def walk() -> np.ndarray:
    """A 102-frame walk of 8 steps, (T, 22, 3)."""
    params = {"steps": 8, "speed": "normal", "direction": "forward", "curve": "straight"}
    return synthesize([(PRIMITIVES["walk"], params)], Style()).joints[:, :22]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _increasing(values):
    return all(a < b for a, b in itertools.pairwise(values))


def _jerk(joints):
    return np.abs(np.diff(joints, n=3, axis=0)).mean()


def _planted_foot_speed(clean, degraded):
    """Mean horizontal speed (m/s) of the foot joints during the clean clip's planted frames."""
    feet = list(FEET)
    still = np.linalg.norm(np.diff(clean[:, feet], axis=0), axis=-1) * FPS < 0.05  # (T-1, 4) planted in the clean clip
    speed = np.linalg.norm(np.diff(degraded[:, feet][..., [0, 2]], axis=0), axis=-1) * FPS
    return speed[still].mean()


def _zero_velocity_runs(joints):
    """Lengths of the runs of consecutive frames with exactly zero velocity."""
    still = (np.abs(np.diff(joints, axis=0)).max(axis=(1, 2)) == 0).astype(int)
    edges = np.diff(np.concatenate([[0], still, [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def test_foot_sliding_moves_planted_feet(walk):
    assert planted(walk).mean() > 0.9  # a walk always has a foot on the floor
    assert _planted_foot_speed(walk, walk) < 0.05
    speeds = [_planted_foot_speed(walk, degrade(walk, "foot_sliding", s, _rng())) for s in SEVERITIES]
    assert speeds[0] > 0.1 and _increasing(speeds), speeds
    # the pose itself is untouched: bones keep their lengths, the body only glides
    np.testing.assert_allclose(bone_lengths(degrade(walk, "foot_sliding", 1.0, _rng())), bone_lengths(walk), atol=1e-9)


def test_floating_and_penetration_move_the_lowest_point(walk):
    floor = walk[..., 1].min()
    lifted = [degrade(walk, "floating", s, _rng())[..., 1].min() - floor for s in SEVERITIES]
    sunk = [degrade(walk, "penetration", s, _rng())[..., 1].min() - floor for s in SEVERITIES]
    assert lifted[0] > 0.05 and _increasing(lifted), lifted
    assert sunk[0] < -0.05 and _increasing([-x for x in sunk]), sunk


def test_stretched_bones_change_bone_lengths(walk):
    clean = bone_lengths(walk)  # (T, 21)
    change = [np.abs(bone_lengths(degrade(walk, "stretched_bones", s, _rng())) / clean - 1).mean() for s in SEVERITIES]
    assert change[0] > 0.03 and _increasing(change), change
    stretched = degrade(walk, "stretched_bones", 1.0, _rng())
    assert stretched[..., 1].min() == pytest.approx(walk[..., 1].min())  # re-floored


def test_jitter_raises_jerk(walk):
    jerks = [_jerk(degrade(walk, "jitter", s, _rng())) for s in SEVERITIES]
    assert jerks[0] > 5 * _jerk(walk) and _increasing(jerks), jerks


def test_freezing_holds_frames_then_snaps(walk):
    assert len(_zero_velocity_runs(walk)) == 0
    runs = [_zero_velocity_runs(degrade(walk, "freezing", s, _rng())) for s in SEVERITIES]
    assert all(len(r) >= len(walk) // EVENT_PERIOD for r in runs)  # one hold per period
    longest = [r.max() for r in runs]
    assert longest[0] >= 4 and _increasing(longest), longest
    frozen = degrade(walk, "freezing", 1.0, _rng())
    assert np.abs(frozen - walk).max(axis=(1, 2)).max() > 0.1  # the snap: the motion has moved on meanwhile


def test_jump_cut_is_a_discontinuity(walk):
    def biggest_step(joints):
        return np.linalg.norm(np.diff(joints, axis=0), axis=-1).mean(-1).max()

    steps = [biggest_step(degrade(walk, "jump_cut", s, _rng())) for s in SEVERITIES]
    assert steps[0] > 3 * biggest_step(walk) and _increasing(steps), steps


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_every_artifact_is_deterministic_grows_with_severity_and_keeps_its_input(walk, artifact):
    before = walk.copy()
    first = degrade(walk, artifact, 0.5, _rng(7))
    np.testing.assert_array_equal(first, degrade(walk, artifact, 0.5, _rng(7)))
    np.testing.assert_array_equal(walk, before)
    assert first.shape == walk.shape and np.isfinite(first).all()
    distance = [np.abs(degrade(walk, artifact, s, _rng(7)) - walk).mean() for s in (0.1, *SEVERITIES)]
    assert distance[0] > 0 and _increasing(distance), (artifact, distance)
    if artifact in ("jitter", "foot_sliding", "jump_cut", "stretched_bones", "freezing"):
        assert not np.array_equal(first, degrade(walk, artifact, 0.5, _rng(8)))  # the randomness is used


def test_errors(walk):
    with pytest.raises(ValueError, match="unknown artifact 'blur'"):
        degrade(walk, "blur", 0.5, _rng())
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"severity must be a number in \(0, 1\]"):
            degrade(walk, "jitter", bad, _rng())
    with pytest.raises(ValueError, match=r"shape \(T>=2, 22, 3\)"):
        degrade(walk[:, :21], "jitter", 0.5, _rng())
    nan = walk.copy()
    nan[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        degrade(nan, "floating", 0.5, _rng())
    with pytest.raises(ValueError, match="severities must be increasing"):
        pair_plan(severities=(0.5, 0.25))
    with pytest.raises(ValueError, match="unknown artifacts"):
        pair_plan(artifacts=("jitter", "blur"))


def test_pairs_prefer_clean_then_milder_copies(walk):
    pairs = list(preference_pairs(walk, _rng(), artifacts=("jitter", "floating"), severities=(0.5, 1.0)))
    # per artifact: clean vs 0.5, clean vs 1.0, 0.5 vs 1.0
    assert [(p.artifact, p.severity_better, p.severity_worse) for p in pairs] == [
        ("jitter", 0.0, 0.5), ("jitter", 0.0, 1.0), ("jitter", 0.5, 1.0),
        ("floating", 0.0, 0.5), ("floating", 0.0, 1.0), ("floating", 0.5, 1.0),
    ]  # fmt: skip
    assert all(p.better is walk or np.array_equal(p.better, walk) for p in pairs if p.severity_better == 0.0)
    # copies of one artifact share their noise: the stronger is the milder scaled up
    mild, strong = pairs[0].worse - walk, pairs[1].worse - walk
    np.testing.assert_allclose(strong, 2 * mild, atol=1e-12)
    assert np.array_equal(pairs[2].better, pairs[0].worse) and np.array_equal(pairs[2].worse, pairs[1].worse)
    assert len(pair_plan(severity_pairs=False)) == len(ARTIFACTS) * len(SEVERITIES)
    versions = degraded_versions(walk, _rng(), artifacts=("jump_cut",))
    assert sorted(versions) == [("jump_cut", s) for s in SEVERITIES]
