"""Foot skating and jerk on constructed joint trajectories with known answers."""

import numpy as np
import pytest
import torch

from reward_models.physics import foot_skating_ratio, jerk

FPS = 20.0
T = 40


def standing(batch: int = 1, frames: int = T, toe_height: float = 0.02) -> np.ndarray:
    """Joints (B, frames, 22, 3) of a still body 1 m up with both toes (10, 11) resting on the floor."""
    joints = np.zeros((batch, frames, 22, 3))
    joints[..., 1] = 1.0
    joints[..., 10, :] = [0.1, toe_height, 0.1]
    joints[..., 11, :] = [-0.1, toe_height, 0.1]
    return joints


def drag(joints: np.ndarray, toe: int, start: int, stop: int, step: float) -> np.ndarray:
    """Slide ``toe`` along x by ``step`` metres per frame over transitions start..stop-1."""
    frames = np.arange(joints.shape[1])
    joints[:, :, toe, 0] += step * np.clip(frames - start, 0, stop - start)
    return joints


def test_planted_still_feet_do_not_skate_while_the_body_moves():
    joints = standing()
    joints[:, :, :10, 0] += np.arange(T)[None, :, None] * 0.2  # upper body sweeps 4 m/s
    assert foot_skating_ratio(joints, [T]).tolist() == [0.0]


def test_dragging_a_grounded_foot_gives_its_share_of_transitions():
    joints = drag(standing(), toe=10, start=10, stop=30, step=0.05)  # 1 m/s for 20 of 39 transitions
    np.testing.assert_allclose(foot_skating_ratio(joints, [T]), [20 / 39])
    both = drag(joints.copy(), toe=11, start=10, stop=30, step=0.05)  # either foot: a transition counts once
    np.testing.assert_allclose(foot_skating_ratio(both, [T]), [20 / 39])
    later = drag(joints.copy(), toe=11, start=30, stop=35, step=0.05)
    np.testing.assert_allclose(foot_skating_ratio(later, [T]), [25 / 39])


def test_a_foot_in_the_air_moving_fast_does_not_count():
    joints = drag(standing(toe_height=0.3), toe=10, start=5, stop=35, step=0.2)
    assert foot_skating_ratio(joints, [T]).tolist() == [0.0]
    just_below = drag(standing(toe_height=0.049), toe=10, start=10, stop=30, step=0.05)
    just_above = drag(standing(toe_height=0.051), toe=10, start=10, stop=30, step=0.05)
    np.testing.assert_allclose(foot_skating_ratio(np.concatenate([just_below, just_above]), [T, T]), [20 / 39, 0])


def test_a_foot_must_be_grounded_in_both_frames_of_a_transition():
    joints = drag(standing(), toe=10, start=0, stop=20, step=0.05)  # swings in at 1 m/s, stops at frame 20
    joints[:, :20, 10, 1] = 0.3  # in the air until it lands at frame 20
    assert foot_skating_ratio(joints, [T]).tolist() == [0.0]
    joints[:, 19, 10, 1] = 0.02  # touching down one frame early: the 19th transition is grounded and fast
    np.testing.assert_allclose(foot_skating_ratio(joints, [T]), [1 / 39])


def test_the_speed_threshold_is_2_5_cm_per_frame():
    slow = drag(standing(), toe=10, start=10, stop=30, step=0.024)
    fast = drag(standing(), toe=10, start=10, stop=30, step=0.026)
    # Near the threshold the window matters: the first and last two drag transitions average in
    # still ones (0.6 and 0.8 × 0.52 m/s < 0.5 m/s), so 16 of the 20 count.
    np.testing.assert_allclose(foot_skating_ratio(np.concatenate([slow, fast]), [T, T]), [0, 16 / 39])


def test_one_frame_jitter_is_smoothed_away_by_the_window():
    joints = standing()
    joints[:, 20, 10, 0] += 0.05  # out and back: two transitions at 1 m/s, window mean 0.4 m/s
    assert foot_skating_ratio(joints, [T]).tolist() == [0.0]
    np.testing.assert_allclose(foot_skating_ratio(joints, [T], window=1), [2 / 39])


def test_skating_is_batched_and_ignores_frames_past_each_length():
    clip = drag(standing(), toe=10, start=10, stop=30, step=0.05)
    padded = standing(frames=T)
    padded[:, 20:] = np.nan  # a 20-frame clip followed by padding
    padded[:, 25:30, 10] = [[[0.0, 0.0, 0.0]]]
    batch = np.concatenate([clip, padded])
    np.testing.assert_allclose(foot_skating_ratio(batch, np.array([T, 20])), [20 / 39, 0.0])
    short = drag(standing(), toe=10, start=5, stop=15, step=0.05)  # past length 15 the drag continues...
    short = drag(short, toe=10, start=15, stop=40, step=0.05)
    np.testing.assert_allclose(foot_skating_ratio(short, [15]), [9 / 14])  # transitions 5..13; the rest unseen
    torch_out = foot_skating_ratio(torch.from_numpy(batch), torch.tensor([T, 20]))
    assert isinstance(torch_out, torch.Tensor) and torch_out.shape == (2,)


def test_jerk_of_constant_velocity_is_zero_and_of_a_cubic_is_six_a():
    t = np.arange(T) / FPS  # seconds
    a = np.linspace(0.1, 2.2, 22)  # one cubic coefficient per joint, m/s³
    joints = np.zeros((2, T, 22, 3))
    joints[0] = 0.3 + 1.5 * t[:, None, None]  # every coordinate at constant velocity
    joints[1, :, :, 0] = a * t[:, None] ** 3 - 0.7 * t[:, None] ** 2 + 2.0 * t[:, None]
    joints[1, :, :, 2] = 0.4 * t[:, None] ** 2
    values = jerk(joints, [T, T])
    assert isinstance(values, np.ndarray)
    assert abs(values[0]) < 1e-6
    assert values[1] == pytest.approx(6 * a.mean(), rel=1e-6)


def test_jerk_ignores_frames_past_each_length():
    t = np.arange(T) / FPS
    joints = np.zeros((2, T, 22, 3))
    joints[:, :, :, 1] = 0.5 * t[:, None] ** 3
    joints[1, 12:] = np.random.default_rng(0).normal(size=(T - 12, 22, 3)) * 10  # padding garbage
    np.testing.assert_allclose(jerk(torch.from_numpy(joints), torch.tensor([T, 12])).numpy(), [3.0, 3.0], rtol=1e-6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda j: foot_skating_ratio(j[0], [T]), r"shape \(B, T, J, 3\)"),
        (lambda j: foot_skating_ratio(j[..., :10, :], [T]), "joint index 11"),
        (lambda j: foot_skating_ratio(j, [T, T]), r"lengths must be integers of shape \(1,\)"),
        (lambda j: foot_skating_ratio(j, [1]), r"lengths must lie in \[2, 40\]"),
        (lambda j: foot_skating_ratio(j, [41]), r"lengths must lie in \[2, 40\]"),
        (lambda j: foot_skating_ratio(j, [20.0]), "lengths must be integers"),
        (lambda j: foot_skating_ratio(j, [T], window=4), "positive odd"),
        (lambda j: jerk(j, [3]), r"lengths must lie in \[4, 40\]"),
        (lambda j: jerk(np.where(np.arange(T)[None, :, None, None] == 5, np.nan, j), [T]), "NaN or Inf"),
    ],
)
def test_bad_input_raises_value_error_naming_it(call, message):
    with pytest.raises(ValueError, match=message):
        call(standing())
