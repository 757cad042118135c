"""The motion tokenizer: a T2M-GPT-style VQ-VAE over normalised HumanML3D features.

A 1D ResNet conv encoder downsamples ``T`` frames by ``stride_t ** down_t`` (4 by default:
196 frames -> 49 codes), an EMA codebook with dead-code reset quantises each step, and a
mirrored decoder (nearest upsampling + conv) maps codes back to frames. Everything is
padding-aware: given per-row ``lengths`` the padded steps are zeroed after every layer, so a
row's codes do not depend on what it is batched with, and the losses and codebook statistics
see valid steps only.

The checkpoint is self-contained: the dataset's feature mean/std live in the model as
buffers (:meth:`MotionVQVAE.set_normalizer`), next to the codebook and its EMA statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from motion_env.features import FEATURE_DIM, FeatureStatsMixin, length_batches


class MotionVQVAEConfig(PretrainedConfig):
    """Configuration of :class:`MotionVQVAE`.

    The defaults are sized for a CPU; T2M-GPT's reference is ``width=512, codebook_size=512,
    code_dim=512``. The architecture is the same at any size.

    Args:
        feature_dim: width of a feature frame, ``12 * J - 1`` (263 for HumanML3D, 251 for KIT-ML).
        width: channels of the conv trunk.
        depth: residual blocks per resolution level (dilations ``dilation_growth ** i``, reversed).
        dilation_growth: growth of the dilation between residual blocks (T2M-GPT: 3).
        down_t: number of downsampling levels.
        stride_t: temporal stride of each level; frames per code is ``stride_t ** down_t``.
        codebook_size: number of codes K.
        code_dim: width of a code embedding.
        commitment_weight: weight of the commitment loss ``||z - sg(q)||^2``.
        ema_decay: decay of the codebook's exponential moving averages.
        dead_code_threshold: a code whose EMA usage count falls below this is reset to a random
            encoder output of the batch (training only); 0 disables the reset.
        joint_loss_weight: extra smooth-L1 weight on the root-relative joint positions (ric).
        velocity_loss_weight: extra smooth-L1 weight on the local joint velocities (0 = off).
        root_loss_weight: extra smooth-L1 weight on the root channels (rotation velocity, linear
            velocity, height). They are 4 of 263 features, so without it the root's turning and
            travel barely count in the loss and reconstructions lose their path (0 = off).
    """

    model_type = "motion_vqvae"

    def __init__(
        self,
        feature_dim: int = FEATURE_DIM,
        width: int = 256,
        depth: int = 2,
        dilation_growth: int = 3,
        down_t: int = 2,
        stride_t: int = 2,
        codebook_size: int = 512,
        code_dim: int = 256,
        commitment_weight: float = 0.02,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 1.0,
        joint_loss_weight: float = 0.5,
        velocity_loss_weight: float = 0.0,
        root_loss_weight: float = 1.0,
        **kwargs,
    ):
        if (feature_dim + 1) % 12 != 0:
            raise ValueError(
                f"feature_dim must be 12 * num_joints - 1 (263 for HumanML3D, 251 for KIT), got {feature_dim}"
            )
        sizes = dict(width=width, depth=depth, dilation_growth=dilation_growth, down_t=down_t, stride_t=stride_t,
                     codebook_size=codebook_size, code_dim=code_dim)  # fmt: skip
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0 (0 disables the reset), got {dead_code_threshold}")
        self.feature_dim = feature_dim
        self.width = width
        self.depth = depth
        self.dilation_growth = dilation_growth
        self.down_t = down_t
        self.stride_t = stride_t
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.commitment_weight = commitment_weight
        self.ema_decay = ema_decay
        self.dead_code_threshold = dead_code_threshold
        self.joint_loss_weight = joint_loss_weight
        self.velocity_loss_weight = velocity_loss_weight
        self.root_loss_weight = root_loss_weight
        super().__init__(**kwargs)

    @property
    def downsample_factor(self) -> int:
        """Frames per code."""
        return self.stride_t**self.down_t

    @property
    def num_joints(self) -> int:
        return (self.feature_dim + 1) // 12


@dataclass
class MotionVQVAEOutput(ModelOutput):
    """Output of :meth:`MotionVQVAE.forward`.

    Args:
        loss: ``recon_loss + commitment_weight * commit_loss``.
        reconstruction: ``(B, T, D)`` normalised features decoded from the quantised codes;
            padded frames are zero.
        codes: ``(B, N)`` code indices; steps past a row's code length hold the code nearest
            to zero and must be cut with ``code_lengths``.
        code_lengths: ``(B,)`` valid codes per row.
        recon_loss: smooth-L1 on all features plus the weighted joint/velocity terms.
        commit_loss: mean squared distance of encoder outputs to their (detached) codes.
        perplexity: ``exp`` of the entropy of the batch's code histogram.
        code_usage: fraction of the codebook used at least once in the batch.
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    code_lengths: torch.LongTensor | None = None
    recon_loss: torch.FloatTensor | None = None
    commit_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    code_usage: torch.FloatTensor | None = None


class ResConv1DBlock(nn.Module):
    """T2M-GPT's residual unit: ReLU -> dilated conv 3 -> ReLU -> conv 1, plus the input."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x))))  # (B, C, T)
        return (x + h) * mask


class Resnet1D(nn.Module):
    def __init__(self, width: int, depth: int, dilation_growth: int):
        super().__init__()
        dilations = [dilation_growth**i for i in range(depth)][::-1]  # T2M-GPT's reverse_dilation
        self.blocks = nn.ModuleList(ResConv1DBlock(width, d) for d in dilations)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return x


class MotionEncoder(nn.Module):
    """conv in -> down_t x (strided conv + Resnet1D) -> conv to code_dim."""

    def __init__(self, config: MotionVQVAEConfig):
        super().__init__()
        s = config.stride_t
        self.stride = s
        self.conv_in = nn.Conv1d(config.feature_dim, config.width, 3, padding=1)
        # Kernel 2s with padding ceil(s/2) maps T to exactly T / s (T2M-GPT's kernel 4, padding 1 for s = 2).
        self.downs = nn.ModuleList(
            nn.Conv1d(config.width, config.width, 2 * s, stride=s, padding=(s + 1) // 2) for _ in range(config.down_t)
        )
        self.resnets = nn.ModuleList(
            Resnet1D(config.width, config.depth, config.dilation_growth) for _ in range(config.down_t)
        )
        self.conv_out = nn.Conv1d(config.width, config.code_dim, 3, padding=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` (B, D, T), ``mask`` (B, 1, T) -> (B, code_dim, N)."""
        x = F.relu(self.conv_in(x * mask)) * mask  # (B, W, T)
        for down, resnet in zip(self.downs, self.resnets):
            mask = mask[..., :: self.stride]
            x = resnet(down(x) * mask, mask)  # (B, W, T / s)
        return self.conv_out(x) * mask  # (B, code_dim, N)


class MotionDecoder(nn.Module):
    """conv in -> down_t x (Resnet1D + nearest upsampling + conv) -> conv, ReLU, conv to D."""

    def __init__(self, config: MotionVQVAEConfig):
        super().__init__()
        self.stride = config.stride_t
        self.conv_in = nn.Conv1d(config.code_dim, config.width, 3, padding=1)
        self.resnets = nn.ModuleList(
            Resnet1D(config.width, config.depth, config.dilation_growth) for _ in range(config.down_t)
        )
        self.ups = nn.ModuleList(nn.Conv1d(config.width, config.width, 3, padding=1) for _ in range(config.down_t))
        self.conv_mid = nn.Conv1d(config.width, config.width, 3, padding=1)
        self.conv_out = nn.Conv1d(config.width, config.feature_dim, 3, padding=1)

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``z`` (B, code_dim, N), ``mask`` (B, 1, N) -> (B, D, T)."""
        x = F.relu(self.conv_in(z * mask)) * mask  # (B, W, N)
        for resnet, up in zip(self.resnets, self.ups):
            x = resnet(x, mask)
            x = F.interpolate(x, scale_factor=self.stride, mode="nearest")  # (B, W, s * N)
            mask = mask.repeat_interleave(self.stride, dim=-1)
            x = up(x) * mask
        x = F.relu(self.conv_mid(x)) * mask
        return self.conv_out(x) * mask  # (B, D, T)


class EMACodebook(nn.Module):
    """Nearest-neighbour quantiser whose codebook follows EMAs of its assigned encoder outputs.

    The codebook is a buffer: it gets no gradient, only the EMA update in training mode
    (T2M-GPT's ``QuantizeEMAReset``). The first training batch initialises it with random
    encoder outputs. A code whose EMA count falls below ``dead_code_threshold`` is moved to a
    random encoder output of the batch, and its EMA statistics restart there with count =
    threshold, so one assignment in the next batch keeps it alive (T2M-GPT leaves stale
    statistics, which re-randomises a revived code until its count climbs past the threshold).
    """

    def __init__(self, config: MotionVQVAEConfig):
        super().__init__()
        self.decay = config.ema_decay
        self.threshold = config.dead_code_threshold
        K, C = config.codebook_size, config.code_dim
        self.register_buffer("embeddings", torch.zeros(K, C))
        self.register_buffer("ema_sum", torch.zeros(K, C))
        self.register_buffer("ema_count", torch.zeros(K))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each row of ``z`` (..., C) -> (...)."""
        flat = z.reshape(-1, z.shape[-1])  # (M, C)
        distances = (
            flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ self.embeddings.T + self.embeddings.pow(2).sum(-1)
        )  # (M, K)
        return distances.argmin(-1).reshape(z.shape[:-1])

    def _sample(self, valid: torch.Tensor, count: int) -> torch.Tensor:
        if len(valid) >= count:
            return valid[torch.randperm(len(valid), device=valid.device)[:count]]
        return valid[torch.randint(len(valid), (count,), device=valid.device)]

    @torch.no_grad()
    def update(self, valid: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA step on the valid encoder outputs ``valid`` (M, C) and their codes (M,)."""
        onehot = F.one_hot(codes, len(self.embeddings)).to(valid.dtype)  # (M, K)
        self.ema_sum.mul_(self.decay).add_(onehot.T @ valid, alpha=1 - self.decay)  # (K, C)
        self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)  # (K,)
        dead = self.ema_count < self.threshold  # (K,)
        if dead.any():
            replacement = self._sample(valid, int(dead.sum()))  # (n_dead, C)
            self.ema_sum[dead] = replacement * self.threshold
            self.ema_count[dead] = self.threshold
        # Never-used codes with reset off decay towards 0/0; they keep their last embedding.
        alive = self.ema_count > 1e-12
        self.embeddings[alive] = self.ema_sum[alive] / self.ema_count[alive, None]

    @torch.no_grad()
    def initialize(self, valid: torch.Tensor) -> None:
        self.embeddings.copy_(self._sample(valid, len(self.embeddings)))
        self.ema_sum.copy_(self.embeddings)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    def forward(self, z: torch.Tensor, mask: torch.Tensor):
        """Quantise ``z`` (B, N, C) with valid steps ``mask`` (B, N) bool.

        Returns the straight-through quantised ``(B, N, C)``, codes ``(B, N)``, the commitment
        loss, perplexity and code usage, all over valid steps only.
        """
        valid = z[mask].detach()  # (M, C)
        if self.training and not self.initialized:
            self.initialize(valid)
        codes = self.nearest(z.detach())  # (B, N)
        quantized = self.embeddings[codes]  # (B, N, C)
        valid_codes = codes[mask]  # (M,)
        if self.training:
            self.update(valid, valid_codes)

        commit_loss = (z - quantized).pow(2)[mask].mean()  # quantized is a buffer: no gradient to it
        quantized = z + (quantized - z).detach()  # straight-through estimator

        histogram = torch.bincount(valid_codes, minlength=len(self.embeddings)).to(z.dtype)  # (K,)
        probs = histogram / histogram.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        code_usage = (histogram > 0).to(z.dtype).mean()
        return quantized, codes, commit_loss, perplexity, code_usage


class MotionVQVAE(FeatureStatsMixin, PreTrainedModel):
    """T2M-GPT's motion VQ-VAE: normalised features (B, T, D) <-> codes (B, T / 4).

    ``forward`` trains it (reconstruction + commitment loss, EMA codebook updates in training
    mode); ``encode`` / ``decode`` are the tokenizer API; ``decode_embeddings`` decodes
    continuous code embeddings differentiably (e.g. probability-weighted codebook rows).
    """

    config_class = MotionVQVAEConfig
    base_model_prefix = "vqvae"
    main_input_name = "features"

    def __init__(self, config: MotionVQVAEConfig):
        super().__init__(config)
        self.encoder = MotionEncoder(config)
        self.quantizer = EMACodebook(config)
        self.decoder = MotionDecoder(config)
        self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
        self.register_buffer("feature_std", torch.ones(config.feature_dim))
        j = config.num_joints  # the layout of motion_env.features.FEATURE_SLICES for j joints
        self._ric = slice(4, 4 + (j - 1) * 3)
        self._local_velocity = slice(4 + (j - 1) * 9, 4 + (j - 1) * 9 + j * 3)
        self.post_init()

    def _init_weights(self, module):
        # PyTorch's default conv init: the trunk has no normalisation layers, so the N(0, 0.02)
        # transformers default would shrink activations layer after layer.
        if isinstance(module, nn.Conv1d):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.weight.shape[1] * module.weight.shape[2])
            nn.init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, EMACodebook):
            for buffer in (module.embeddings, module.ema_sum, module.ema_count, module.initialized):
                nn.init.zeros_(buffer)
        elif isinstance(module, MotionVQVAE):
            nn.init.zeros_(module.feature_mean)
            nn.init.ones_(module.feature_std)

    @property
    def codebook(self) -> torch.Tensor:
        """The code embeddings, (K, code_dim)."""
        return self.quantizer.embeddings

    def _check_features(self, features: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Validate (B, T, D) features; return frame lengths cropped to whole codes, (B,)."""
        factor = self.config.downsample_factor
        if features.ndim != 3 or features.shape[-1] != self.config.feature_dim:
            raise ValueError(f"features must have shape (B, T, {self.config.feature_dim}), got {tuple(features.shape)}")
        B, T, _ = features.shape
        if T % factor != 0:
            raise ValueError(f"T must be a multiple of {factor} (frames per code), got T={T}")
        if lengths is None:
            return torch.full((B,), T, dtype=torch.long, device=features.device)
        lengths = torch.as_tensor(lengths, device=features.device).long()
        if lengths.shape != (B,) or lengths.min() < 0 or lengths.max() > T:
            raise ValueError(f"lengths must have shape ({B},) with values in [0, T={T}], got {lengths.tolist()}")
        return lengths // factor * factor  # trailing frames that do not fill a code are ignored

    @staticmethod
    def _mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
        return torch.arange(size, device=lengths.device) < lengths[:, None]  # (B, size) bool

    def _encode_continuous(self, features: torch.Tensor, lengths: torch.Tensor | None):
        """Encoder outputs (B, N, C), code lengths (B,) and the frame mask (B, T) bool."""
        lengths = self._check_features(features, lengths)
        frame_mask = self._mask(lengths, features.shape[1])  # (B, T)
        z = self.encoder(features.transpose(1, 2), frame_mask[:, None].to(features.dtype))  # (B, C, N)
        return z.transpose(1, 2), lengths // self.config.downsample_factor, frame_mask

    @torch.no_grad()
    def encode(self, features: torch.Tensor, lengths: torch.Tensor | None = None):
        """Codes of normalised features: the nearest code of each step, in any mode.

        Args:
            features: ``(B, T, D)`` normalised, ``T`` a multiple of 4 (``downsample_factor``).
            lengths: ``(B,)`` valid frames per row; frames past ``4 * (length // 4)`` are ignored
                (a row shorter than 4 frames gets 0 codes).

        Returns:
            ``codes`` (B, N) long, ``N = T / 4`` (steps past a row's code length are meaningless),
            and ``code_lengths`` (B,) long.
        """
        z, code_lengths, _ = self._encode_continuous(features, lengths)  # (B, N, C)
        return self.quantizer.nearest(z), code_lengths

    def decode_embeddings(self, z: torch.Tensor, code_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Decode continuous code embeddings ``z`` (B, N, code_dim) -> normalised features (B, 4N, D).

        Differentiable in ``z``. Frames past ``4 * code_lengths`` are zero (all of a row of 0 codes).
        """
        if z.ndim != 3 or z.shape[-1] != self.config.code_dim:
            raise ValueError(f"z must have shape (B, N, {self.config.code_dim}), got {tuple(z.shape)}")
        B, N, _ = z.shape
        if code_lengths is None:
            code_lengths = torch.full((B,), N, dtype=torch.long, device=z.device)
        code_lengths = torch.as_tensor(code_lengths, device=z.device).long()
        if code_lengths.shape != (B,) or code_lengths.min() < 0 or code_lengths.max() > N:
            raise ValueError(
                f"code_lengths must have shape ({B},) with values in [0, N={N}], got {code_lengths.tolist()}"
            )
        code_mask = self._mask(code_lengths, N)[:, None].to(z.dtype)  # (B, 1, N)
        return self.decoder(z.transpose(1, 2), code_mask).transpose(1, 2)  # (B, T, D)

    def decode(self, codes: torch.Tensor, code_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (B, N) -> normalised features (B, 4N, D); wrap in ``torch.no_grad()`` for inference."""
        if codes.ndim != 2:
            raise ValueError(f"codes must have shape (B, N), got {tuple(codes.shape)}")
        K = self.config.codebook_size
        if codes.numel() and (codes.min() < 0 or codes.max() >= K):
            raise ValueError(f"codes must be in [0, {K}), got min {int(codes.min())} max {int(codes.max())}")
        return self.decode_embeddings(self.codebook[codes], code_lengths)  # (B, N, C) -> (B, T, D)

    @torch.no_grad()
    def decode_motion(
        self, codes: torch.Tensor, code_lengths: torch.Tensor, batch_size: int = 64
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generated codes -> raw (un-normalised) features (B, 4N, D) and frame lengths (B,).

        Entries past a row's length (PAD, END) are never decoded into its frames; rows of 0 codes
        give 0 frames. Rows are decoded in batches of ``batch_size`` of similar length, each cut to
        its longest row: the decoder masks every layer, so a row's frames do not depend on its
        batch, and short rows stop paying for the longest one.
        """
        if codes.ndim != 2:
            raise ValueError(f"codes must have shape (B, N), got {tuple(codes.shape)}")
        B, N = codes.shape
        code_lengths = torch.as_tensor(code_lengths, device=codes.device).long()
        if code_lengths.shape != (B,) or (B and (code_lengths.min() < 0 or code_lengths.max() > N)):
            raise ValueError(
                f"code_lengths must have shape ({B},) with values in [0, N={N}], got {code_lengths.tolist()}"
            )
        safe = codes.clamp(0, self.config.codebook_size - 1)  # PAD past the end would index past the codebook
        factor = self.config.downsample_factor
        normalised = torch.zeros(B, N * factor, self.config.feature_dim, dtype=self.codebook.dtype, device=codes.device)
        for rows in length_batches(code_lengths, batch_size)[0]:
            n = int(code_lengths[rows].max())
            if n > 0:
                normalised[rows, : n * factor] = self.decode(safe[rows, :n], code_lengths[rows])  # (b, 4n, D)
        return self.denormalize(normalised), code_lengths * factor

    @staticmethod
    def _masked_smooth_l1(reconstruction, features, frame_mask, part: slice) -> torch.Tensor:
        error = F.smooth_l1_loss(reconstruction[..., part], features[..., part], reduction="none")  # (B, T, d)
        return error[frame_mask].mean()

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor | None = None, return_dict: bool = True
    ) -> MotionVQVAEOutput | tuple:
        """Encode, quantise (EMA update + dead-code reset in training mode) and decode.

        Args:
            features: ``(B, T, D)`` normalised features, ``T`` a multiple of 4.
            lengths: ``(B,)`` valid frames per row (default: all ``T``); rows shorter than 4 frames
                are skipped, but one row at least must hold a code.
        """
        z, code_lengths, frame_mask = self._encode_continuous(features, lengths)  # (B, N, C)
        if code_lengths.sum() == 0:
            given = features.shape[1] if lengths is None else torch.as_tensor(lengths).tolist()
            raise ValueError(f"no row holds a whole code ({self.config.downsample_factor} frames); lengths {given}")
        code_mask = self._mask(code_lengths, z.shape[1])  # (B, N)
        quantized, codes, commit_loss, perplexity, code_usage = self.quantizer(z, code_mask)
        reconstruction = self.decode_embeddings(quantized, code_lengths)  # (B, T, D)

        recon_loss = self._masked_smooth_l1(reconstruction, features, frame_mask, slice(None))
        if self.config.joint_loss_weight:
            recon_loss = recon_loss + self.config.joint_loss_weight * self._masked_smooth_l1(
                reconstruction, features, frame_mask, self._ric
            )
        if self.config.root_loss_weight:
            recon_loss = recon_loss + self.config.root_loss_weight * self._masked_smooth_l1(
                reconstruction, features, frame_mask, slice(0, 4)
            )
        if self.config.velocity_loss_weight:
            recon_loss = recon_loss + self.config.velocity_loss_weight * self._masked_smooth_l1(
                reconstruction, features, frame_mask, self._local_velocity
            )
        loss = recon_loss + self.config.commitment_weight * commit_loss

        output = MotionVQVAEOutput(
            loss=loss,
            reconstruction=reconstruction,
            codes=codes,
            code_lengths=code_lengths,
            recon_loss=recon_loss,
            commit_loss=commit_loss,
            perplexity=perplexity,
            code_usage=code_usage,
        )
        return output if return_dict else output.to_tuple()
