"""The perception model ``C`` of the human-preference reward ``r_p = C(g(m))`` (Eq. 6).

It follows MotionCritic (Wang et al. 2024): a transformer reads a short window of SMPL
rotations and gives one score per clip, higher for motion people prefer, trained on pairs with
the Bradley-Terry loss (Eq. 5). Its input is the ``rot6d`` representation of
:mod:`reward_models.smpl` -- per frame 24 local joint rotations in our 6D form plus the pelvis
position as a 25th slot, ``(..., 25, 6)`` -- in windows of :attr:`MotionCriticConfig.window`
frames (60, as MotionCritic's).

What the network sees of a window (:func:`critic_inputs`), per frame: the 24 rotations; the
pelvis position with its floor-plane (x, z) taken relative to the window's first frame and the
whole window turned about Y so that its first frame faces +Z (a motion is as good wherever it
stands and whichever way it faces; the height is kept, so floating and sinking stay visible);
the 22 joint positions from forward kinematics of those rotations (feet on or off the floor,
feet that move); and the frame-to-frame velocity of all of it, per second. These are
standardised with a mean/std stored in the model (:meth:`MotionCritic.set_input_normalizer`).
Each group of ``frames_per_token`` consecutive frames (3) is embedded linearly as one token, a
learned position embedding is added, a pre-norm transformer encoder runs over the tokens, and the
masked mean and max over tokens feed a small MLP head.

:meth:`MotionCritic.score` takes clips of any length: a clip longer than a window is cut into
windows every ``score_stride`` frames, plus one window ending at the clip's last frame, and the
window scores are averaged; a clip shorter than a window is scored on its own frames only (the
missing tokens are masked out of attention and pooling, and missing frames inside the last token
read as the training mean -- padding is never filled with repeated frames, which would look like
a freeze).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from motion_env.rotations import cont6d_to_matrix, matrix_to_cont6d, matrix_to_quat
from motion_env.skeleton import FPS, NUM_JOINTS, NUM_SMPL_JOINTS, forward_kinematics

NUM_SLOTS = NUM_SMPL_JOINTS + 1  # 24 rotations + the pelvis position
ROOT_SLOT = NUM_SMPL_JOINTS


class MotionCriticConfig(PretrainedConfig):
    """Configuration of :class:`MotionCritic`.

    Args:
        window: frames per scored window (MotionCritic: 60, i.e. 3 s at 20 fps).
        score_stride: frames between the starts of consecutive windows when scoring a longer clip.
        hidden_size: width of the frame embedding and of the transformer.
        num_layers: transformer encoder layers.
        num_heads: attention heads (must divide ``hidden_size``).
        intermediate_size: width of each layer's feed-forward block.
        dropout: dropout in the transformer (training only).
        kinematic_features: also feed the forward-kinematics joint positions (and their
            velocities) of each frame, not only the rotations.
        frames_per_token: consecutive frames embedded together as one transformer token. Every
            frame keeps its own inputs (velocities included) inside the token; grouping only
            shortens the sequence, which is what the transformer's cost grows with.
    """

    model_type = "motion_critic"

    def __init__(
        self,
        window: int = 60,
        score_stride: int = 30,
        hidden_size: int = 128,
        num_layers: int = 3,
        num_heads: int = 4,
        intermediate_size: int = 256,
        dropout: float = 0.0,
        kinematic_features: bool = True,
        frames_per_token: int = 3,
        **kwargs,
    ):
        sizes = {"window": window, "score_stride": score_stride, "hidden_size": hidden_size, "num_layers": num_layers,
                 "num_heads": num_heads, "intermediate_size": intermediate_size,
                 "frames_per_token": frames_per_token}  # fmt: skip
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if window < 2:
            raise ValueError(f"window must be >= 2 frames (velocities need two), got {window}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.window = window
        self.score_stride = score_stride
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.dropout = dropout
        self.kinematic_features = kinematic_features
        self.frames_per_token = frames_per_token
        super().__init__(**kwargs)

    @property
    def input_dim(self) -> int:
        """Width of a frame's input vector: pose (rotations, pelvis, joints) and its velocity."""
        pose = NUM_SMPL_JOINTS * 6 + 3 + (NUM_JOINTS * 3 if self.kinematic_features else 0)
        return 2 * pose

    @property
    def num_tokens(self) -> int:
        """Transformer tokens of a full window."""
        return -(-self.window // self.frames_per_token)


@dataclass
class MotionCriticOutput(ModelOutput):
    """Output of :meth:`MotionCritic.forward`.

    Args:
        loss: Bradley-Terry loss ``-mean log sigmoid(C(better) - C(worse))`` (pairs only).
        scores: ``(B,)`` scores of ``motion``.
        scores_better: ``(B,)`` scores of the preferred windows.
        scores_worse: ``(B,)`` scores of the other windows.
        accuracy: fraction of pairs with ``C(better) > C(worse)``.
    """

    loss: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    scores_better: torch.FloatTensor | None = None
    scores_worse: torch.FloatTensor | None = None
    accuracy: torch.FloatTensor | None = None


def check_rot6d(rot6d, lengths=None, name: str = "rot6d") -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``rot6d`` ``(B, T, 25, 6)`` and ``lengths`` ``(B,)``; return them as tensors.

    ``lengths`` defaults to all ``T``; each must be in ``[1, T]``. Valid frames must be finite
    (padded frames are never read).
    """
    rot6d = torch.as_tensor(rot6d)
    if rot6d.ndim != 4 or rot6d.shape[-2:] != (NUM_SLOTS, 6):
        raise ValueError(f"{name} must have shape (B, T, {NUM_SLOTS}, 6) (24 SMPL rotations in 6D + the pelvis "
                         f"position), got {tuple(rot6d.shape)}")  # fmt: skip
    B, T = rot6d.shape[:2]
    if T == 0:
        raise ValueError(f"{name} has no frames (shape {tuple(rot6d.shape)})")
    if not rot6d.is_floating_point():
        rot6d = rot6d.float()
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.long, device=rot6d.device)
    lengths = torch.as_tensor(lengths, device=rot6d.device)
    if lengths.shape != (B,) or lengths.is_floating_point() or (B and (lengths.min() < 1 or lengths.max() > T)):
        raise ValueError(f"lengths must be {B} whole numbers in [1, T={T}], got {lengths.tolist()}")
    lengths = lengths.long()
    valid = torch.arange(T, device=rot6d.device) < lengths[:, None]  # (B, T)
    bad = ~torch.isfinite(rot6d).flatten(2).all(-1) & valid
    if bad.any():
        row, frame = torch.nonzero(bad)[0].tolist()
        raise ValueError(f"{name} holds NaN or Inf (first at row {row}, frame {frame})")
    return rot6d, lengths


def window_starts(lengths: torch.Tensor, window: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start frames of the windows that score each clip, ``(B, K)``, and which are real, ``(B, K)`` bool.

    A clip of ``L > window`` frames gets windows at ``0, stride, 2 * stride, ...`` while they
    fit, and one more ending at frame ``L`` if the last of those does not; a shorter clip gets
    one window at 0.
    """
    overhang = (lengths - window).clamp(min=0)  # (B,) frames past the first window
    counts = torch.div(overhang + stride - 1, stride, rounding_mode="floor") + 1  # ceil(overhang / stride) + 1
    k = torch.arange(int(counts.max()), device=lengths.device)  # (K,)
    starts = torch.minimum(k[None] * stride, overhang[:, None])  # (B, K)
    return starts, k[None] < counts[:, None]


def _yaw_turn(root_matrix: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` rotation about Y that turns the facing of ``root_matrix`` (N, 3, 3) to +Z."""
    forward = root_matrix[..., :, 2]  # the body's +Z axis in the world
    yaw = torch.atan2(forward[..., 0], forward[..., 2])  # (N,)
    c, s = torch.cos(yaw), torch.sin(yaw)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([c, zero, -s, zero, one, zero, s, zero, c], dim=-1).reshape(yaw.shape + (3, 3))  # R_y(-yaw)


def critic_inputs(rot6d: torch.Tensor, kinematic_features: bool = True) -> torch.Tensor:
    """Per-frame inputs ``(N, W, D)`` of windows ``rot6d`` ``(N, W, 25, 6)`` (see the module docstring)."""
    rotations = rot6d[..., :ROOT_SLOT, :]  # (N, W, 24, 6)
    pelvis = rot6d[..., ROOT_SLOT, :3]  # (N, W, 3)
    root_matrix = cont6d_to_matrix(rotations[..., 0, :])  # (N, W, 3, 3)
    turn = _yaw_turn(root_matrix[:, 0])[:, None]  # (N, 1, 3, 3)
    start = pelvis[:, :1] * pelvis.new_tensor([1.0, 0.0, 1.0])  # (N, 1, 3)
    pelvis = (turn @ (pelvis - start)[..., None])[..., 0]  # (N, W, 3)
    root = matrix_to_cont6d(turn @ root_matrix)  # (N, W, 6)
    rotations = torch.cat([root[..., None, :], rotations[..., 1:, :]], dim=-2)  # (N, W, 24, 6)
    parts = [rotations.flatten(-2), pelvis]
    if kinematic_features:
        quats = matrix_to_quat(cont6d_to_matrix(rotations))  # (N, W, 24, 4)
        parts.append(forward_kinematics(quats, pelvis)[..., :NUM_JOINTS, :].flatten(-2))  # (N, W, 66)
    pose = torch.cat(parts, dim=-1)  # (N, W, D / 2)
    velocity = torch.zeros_like(pose)
    if pose.shape[1] > 1:
        velocity[:, 1:] = (pose[:, 1:] - pose[:, :-1]) * FPS
        velocity[:, 0] = velocity[:, 1]  # frame 0 has no past; take frame 1's
    return torch.cat([pose, velocity], dim=-1)


def bradley_terry_loss(scores_better: torch.Tensor, scores_worse: torch.Tensor) -> torch.Tensor:
    """``-mean log sigmoid(s_better - s_worse)`` (Eq. 5, the comma read as a minus)."""
    return -F.logsigmoid(scores_better - scores_worse).mean()


class MotionCritic(PreTrainedModel):
    """Perception model: ``rot6d`` windows ``(B, W, 25, 6)`` -> one score per window, higher is better.

    ``forward(better=..., worse=...)`` returns the Bradley-Terry loss (Eq. 5) for
    :class:`transformers.Trainer`; ``forward(motion=...)`` returns scores of windows of at most
    ``window`` frames; :meth:`score` scores whole clips of any length.
    """

    config_class = MotionCriticConfig
    base_model_prefix = "critic"
    main_input_name = "motion"

    def __init__(self, config: MotionCriticConfig):
        super().__init__(config)
        H = config.hidden_size
        self.embed = nn.Linear(config.frames_per_token * config.input_dim, H)
        self.position = nn.Parameter(torch.zeros(config.num_tokens, H))
        layer = nn.TransformerEncoderLayer(H, config.num_heads, config.intermediate_size, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(H)
        self.head = nn.Sequential(nn.Linear(2 * H, H), nn.GELU(), nn.Linear(H, 1))
        self.register_buffer("input_mean", torch.zeros(config.input_dim))
        self.register_buffer("input_std", torch.ones(config.input_dim))
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            nn.init.xavier_uniform_(module.in_proj_weight)
            nn.init.zeros_(module.in_proj_bias)
        elif isinstance(module, MotionCritic):
            nn.init.normal_(module.position, std=0.02)
            nn.init.zeros_(module.input_mean)
            nn.init.ones_(module.input_std)

    def set_input_normalizer(self, mean: torch.Tensor, std: torch.Tensor, min_std: float = 1e-3) -> None:
        """Store the mean/std ``(input_dim,)`` of :func:`critic_inputs` over training windows.

        Standard deviations under ``min_std`` (constant inputs) are raised to it.
        """
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        shape = (self.config.input_dim,)
        if mean.shape != shape or std.shape != shape:
            raise ValueError(f"mean/std must have shape {shape}, got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or (std < 0).any():
            raise ValueError("mean/std must be finite and std >= 0")
        self.input_mean.copy_(mean)
        self.input_std.copy_(std.clamp(min=min_std))

    def _check_window(self, rot6d, lengths, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        rot6d, lengths = check_rot6d(rot6d, lengths, name)
        if rot6d.shape[1] > self.config.window:
            raise ValueError(f"{name} has {rot6d.shape[1]} frames, more than a window ({self.config.window}); "
                             "score longer clips with MotionCritic.score")  # fmt: skip
        return rot6d, lengths

    def _score_windows(self, rot6d: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scores ``(N,)`` of checked windows ``(N, W, 25, 6)`` with ``lengths`` ``(N,)``."""
        W = rot6d.shape[1]
        mask = torch.arange(W, device=rot6d.device) < lengths[:, None]  # (N, W)
        # Padded frames repeat the last real one, so that no garbage enters the kinematics; they
        # are then masked out of attention and pooling.
        index = torch.minimum(torch.arange(W, device=rot6d.device)[None], lengths[:, None] - 1)  # (N, W)
        rot6d = torch.gather(rot6d, 1, index[..., None, None].expand(-1, -1, NUM_SLOTS, 6))
        x = critic_inputs(rot6d.to(self.input_mean.device, torch.float32), self.config.kinematic_features)
        x = ((x - self.input_mean) / self.input_std).to(self.dtype)  # (N, W, D)
        x = x.masked_fill(~mask[..., None], 0.0)  # padded frames read as average frames, not as a freeze
        p = self.config.frames_per_token
        extra = -W % p
        x, mask = F.pad(x, (0, 0, 0, extra)), F.pad(mask, (0, extra))  # (N, W', D), W' a multiple of p
        x = x.reshape(len(x), -1, p * x.shape[-1])  # (N, W' / p, p * D)
        mask = mask.reshape(len(mask), -1, p).any(-1)  # (N, W' / p): a token is real if one of its frames is
        h = self.embed(x) + self.position[: x.shape[1]]  # (N, n, H)
        h = self.norm(self.encoder(h, src_key_padding_mask=~mask))  # (N, n, H)
        weights = mask[..., None].to(h.dtype)
        mean = (h * weights).sum(1) / weights.sum(1)  # (N, H)
        peak = h.masked_fill(~mask[..., None], torch.finfo(h.dtype).min).amax(1)  # (N, H)
        return self.head(torch.cat([mean, peak], dim=-1))[:, 0]  # (N,)

    def forward(
        self,
        motion: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        better: torch.Tensor | None = None,
        worse: torch.Tensor | None = None,
        better_lengths: torch.Tensor | None = None,
        worse_lengths: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> MotionCriticOutput | tuple:
        """Score windows of at most ``window`` frames, or train on preference pairs.

        Args:
            motion: ``(B, W, 25, 6)`` windows to score, with ``lengths`` ``(B,)`` valid frames.
            better, worse: ``(B, W, 25, 6)`` pairs, ``better[i]`` preferred over ``worse[i]``,
                with ``better_lengths`` / ``worse_lengths`` ``(B,)``. Gives the loss (Eq. 5).
        """
        if (better is None) != (worse is None):
            raise ValueError("pass both better and worse (a preference pair), or motion alone")
        if better is None and motion is None:
            raise ValueError("nothing to score: pass motion, or better and worse")
        output = MotionCriticOutput()
        if motion is not None:
            motion, lengths = self._check_window(motion, lengths, "motion")
            output.scores = self._score_windows(motion, lengths)
        if better is not None:
            better, better_lengths = self._check_window(better, better_lengths, "better")
            worse, worse_lengths = self._check_window(worse, worse_lengths, "worse")
            if len(better) != len(worse):
                raise ValueError(
                    f"better and worse must hold the same number of pairs, got {len(better)} and {len(worse)}"
                )
            W = max(better.shape[1], worse.shape[1])
            both = torch.cat([F.pad(better, (0, 0, 0, 0, 0, W - better.shape[1])),
                              F.pad(worse, (0, 0, 0, 0, 0, W - worse.shape[1]))])  # fmt: skip
            scores = self._score_windows(both, torch.cat([better_lengths, worse_lengths]))  # (2B,)
            output.scores_better, output.scores_worse = scores[: len(better)], scores[len(better) :]
            output.loss = bradley_terry_loss(output.scores_better, output.scores_worse)
            output.accuracy = (output.scores_better > output.scores_worse).float().mean()
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def score(self, rot6d, lengths=None, batch_size: int = 512) -> torch.Tensor:
        """Scores ``(B,)`` of whole clips ``rot6d`` ``(B, T, 25, 6)`` with ``lengths`` ``(B,)``.

        Windows as in :func:`window_starts`; the scores of a clip's windows are averaged. The
        model's mode is left as it is (call ``eval()`` first for dropout-free scores).
        Returns float32 on the input's device.
        """
        rot6d, lengths = check_rot6d(rot6d, lengths)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device, W, given_on = self.input_mean.device, self.config.window, rot6d.device
        rot6d, lengths = rot6d.to(device), lengths.to(device)
        B, T = rot6d.shape[:2]
        starts, real = window_starts(lengths, W, self.config.score_stride)  # (B, K)
        owner = torch.arange(B, device=device)[:, None].expand_as(starts)[real]  # (N,)
        starts = starts[real]  # (N,)
        frames = (starts[:, None] + torch.arange(W, device=device)).clamp(max=T - 1)  # (N, W)
        windows = rot6d[owner[:, None], frames]  # (N, W, 25, 6)
        window_lengths = torch.minimum(lengths[owner] - starts, torch.tensor(W, device=device))  # (N,)
        scores = torch.cat([
            self._score_windows(windows[i : i + batch_size], window_lengths[i : i + batch_size]).float()
            for i in range(0, len(windows), batch_size)
        ])  # fmt: skip
        total = torch.zeros(B, device=device).index_add_(0, owner, scores)
        return (total / real.sum(1)).to(given_on)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "MotionCritic",
    "MotionCriticConfig",
    "MotionCriticOutput",
    "bradley_terry_loss",
    "check_rot6d",
    "count_parameters",
    "critic_inputs",
    "window_starts",
]
