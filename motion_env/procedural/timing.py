"""Easing and keyframe curves: how a gesture moves between poses."""

from __future__ import annotations

import numpy as np


def minimum_jerk(s: np.ndarray) -> np.ndarray:
    """The minimum-jerk profile on [0, 1]: zero velocity and acceleration at both ends."""
    s = np.clip(s, 0.0, 1.0)
    return s**3 * (10 - 15 * s + 6 * s**2)


def keyframes(t: np.ndarray, times, values) -> np.ndarray:
    """Minimum-jerk interpolation through ``(time, value)`` keys; held before/after the ends.

    ``values`` may be scalars or equal-length vectors; the result has shape ``t.shape + value.shape``.
    """
    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if np.any(np.diff(times) < 0):
        raise ValueError(f"keyframe times must be non-decreasing, got {times.tolist()}")
    idx = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
    span = np.maximum(times[idx + 1] - times[idx], 1e-9)
    s = minimum_jerk((t - times[idx]) / span)
    s = s.reshape(s.shape + (1,) * (values.ndim - 1))
    return values[idx] * (1 - s) + values[idx + 1] * s


def envelope(t: np.ndarray, start: float, end: float, ramp: float) -> np.ndarray:
    """1 inside [start, end], easing in and out over ``ramp`` seconds, 0 outside."""
    rise = minimum_jerk((t - start) / max(ramp, 1e-9))
    fall = minimum_jerk((end - t) / max(ramp, 1e-9))
    return np.minimum(rise, fall)


def smooth_noise(rng: np.random.Generator, num_frames: int, scale: float, width: float = 8.0) -> np.ndarray:
    """Slow random drift (Gaussian-filtered white noise), standard deviation about ``scale``."""
    from scipy.ndimage import gaussian_filter1d

    noise = gaussian_filter1d(rng.normal(size=num_frames + 40), width, mode="reflect")[20:-20]
    return noise / (noise.std() + 1e-12) * scale
