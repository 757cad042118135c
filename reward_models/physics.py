"""Physical plausibility of joint positions: foot skating and jerk.

Both take HumanML3D joints ``(B, T, 22, 3)`` (metres, y up, the floor at y = 0, 20 fps) with the
number of valid frames of each clip, and return one value per clip, shape ``(B,)``. Frames past a
clip's length are ignored, whatever they hold. Numpy in gives numpy out.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from motion_env.skeleton import FPS, LEFT_FOOT, RIGHT_FOOT

TOES = (LEFT_FOOT[1], RIGHT_FOOT[1])  # (10, 11)

# Foot skating follows GMD (Karunratanakul et al. 2023, "Guided Motion Diffusion", metric
# `calculate_skating_ratio`): a toe is grounded in a frame transition when it is below 5 cm in both
# frames; it skates when its horizontal speed exceeds 0.5 m/s (2.5 cm per frame at 20 fps) in that
# transition and also on average over a centred 5-transition window (zeros beyond the clip), so
# one-frame jitter does not count. The ratio is the share of transitions in which either toe skates.
SKATE_HEIGHT = 0.05  # m
SKATE_SPEED = 0.5  # m/s
SKATE_WINDOW = 5  # frame transitions


def _prepare(joints, lengths, min_length: int, needs_joint: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Check the inputs; return float joints with frames past each length zeroed, the lengths, and
    whether the caller passed numpy."""
    as_numpy = isinstance(joints, np.ndarray)
    joints = torch.as_tensor(joints)
    if not joints.is_floating_point():
        joints = joints.double()
    if joints.ndim != 4 or joints.shape[-1] != 3:
        raise ValueError(f"joints must have shape (B, T, J, 3), got {tuple(joints.shape)}")
    if joints.shape[2] <= needs_joint:
        raise ValueError(f"joints has {joints.shape[2]} joints; joint index {needs_joint} is needed")
    lengths = torch.as_tensor(lengths, device=joints.device)
    if lengths.shape != joints.shape[:1] or lengths.is_floating_point():
        raise ValueError(
            f"lengths must be integers of shape ({joints.shape[0]},), got {lengths.dtype} {tuple(lengths.shape)}"
        )
    lengths = lengths.long()
    if (lengths < min_length).any() or (lengths > joints.shape[1]).any():
        raise ValueError(f"lengths must lie in [{min_length}, {joints.shape[1]}] (T), got {lengths.tolist()}")
    frames = torch.arange(joints.shape[1], device=joints.device) < lengths[:, None]  # (B, T)
    if not torch.isfinite(joints[frames]).all():
        raise ValueError("joints contain NaN or Inf within the clips' lengths")
    joints = torch.where(frames[:, :, None, None], joints, torch.zeros((), dtype=joints.dtype, device=joints.device))
    return joints, lengths, as_numpy


def _output(values: torch.Tensor, as_numpy: bool):
    return values.cpu().numpy() if as_numpy else values


def foot_skating_ratio(
    joints: torch.Tensor | np.ndarray,
    lengths: torch.Tensor | np.ndarray | list[int],
    *,
    fps: float = FPS,
    height_threshold: float = SKATE_HEIGHT,
    speed_threshold: float = SKATE_SPEED,
    window: int = SKATE_WINDOW,
    foot_joints: tuple[int, ...] = TOES,
) -> torch.Tensor:
    """Share of each clip's frame transitions in which a grounded foot slides, shape ``(B,)``.

    Args:
        joints: ``(B, T, J, 3)`` joint positions in metres, y up, floor at 0.
        lengths: ``(B,)`` valid frames per clip, each at least 2.
        fps: frame rate, turning per-frame displacement into m/s.
        height_threshold: a foot joint below this height (m) in two consecutive frames is grounded.
        speed_threshold: horizontal speed (m/s) above which a grounded foot skates, both in the
            transition itself and averaged over ``window`` transitions.
        window: odd length of the centred moving average (1 disables it).
        foot_joints: the joints that stand for the feet (GMD uses the toes).
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number of frames, got {window}")
    joints, lengths, as_numpy = _prepare(joints, lengths, 2, max(foot_joints))
    feet = joints[:, :, list(foot_joints)]  # (B, T, F, 3)
    step = feet[:, 1:] - feet[:, :-1]  # (B, T-1, F, 3)
    speed = torch.linalg.vector_norm(step[..., [0, 2]], dim=-1) * fps  # (B, T-1, F) horizontal, m/s
    valid = torch.arange(speed.shape[1], device=joints.device) < (lengths - 1)[:, None]  # (B, T-1)
    speed = speed * valid[..., None]  # zero past the clip, as the window's padding
    batch, transitions, num_feet = speed.shape
    # avg_pool1d with zero padding counted in the divisor is scipy's uniform_filter1d(mode="constant").
    mean_speed = F.avg_pool1d(
        speed.permute(0, 2, 1).reshape(batch * num_feet, 1, transitions),
        kernel_size=window,
        stride=1,
        padding=window // 2,
        count_include_pad=True,
    )  # (B*F, 1, T-1)
    mean_speed = mean_speed.reshape(batch, num_feet, transitions).permute(0, 2, 1)  # (B, T-1, F)
    height = feet[..., 1]  # (B, T, F)
    grounded = (height[:, :-1] < height_threshold) & (height[:, 1:] < height_threshold)  # (B, T-1, F)
    skating = grounded & (speed > speed_threshold) & (mean_speed > speed_threshold)
    skating = skating.any(dim=-1)  # (B, T-1); never past a clip, where speed is 0
    return _output(skating.sum(dim=1).to(joints.dtype) / (lengths - 1).to(joints.dtype), as_numpy)


def jerk(
    joints: torch.Tensor | np.ndarray, lengths: torch.Tensor | np.ndarray | list[int], *, fps: float = FPS
) -> torch.Tensor:
    """Mean magnitude of the third time derivative of joint positions (m/s³) per clip, shape ``(B,)``.

    The derivative is the third finite difference times ``fps**3``, exact for cubic trajectories;
    the mean runs over all joints and the ``length - 3`` valid difference frames of each clip.
    """
    joints, lengths, as_numpy = _prepare(joints, lengths, 4, 0)
    third = joints[:, 3:] - 3 * joints[:, 2:-1] + 3 * joints[:, 1:-2] - joints[:, :-3]  # (B, T-3, J, 3)
    magnitude = torch.linalg.vector_norm(third, dim=-1).mean(dim=-1) * fps**3  # (B, T-3)
    valid = torch.arange(magnitude.shape[1], device=joints.device) < (lengths - 3)[:, None]  # (B, T-3)
    return _output((magnitude * valid).sum(dim=1) / (lengths - 3).to(joints.dtype), as_numpy)
