"""Text/motion encoders for the text-adherence and motion-quality rewards (Eqs. 3-4) and the evaluator.

Two families share one front door, :class:`TextMotionEncoder`:

- :class:`~reward_models.guo.GuoEncoder` (Guo et al. 2022): bi-GRUs over word vectors and over
  conv-downsampled motion, compared by Euclidean distance, trained with a hinge loss (Eq. 1).
- :class:`~reward_models.tmr.TMREncoder` (TMR): transformers over frozen MiniLM token states and
  over motion, unit-length latents, trained with InfoNCE (Eq. 2).

Every public method takes RAW features ``(B, T, 263)`` with per-row ``lengths`` (the model stores
the dataset's Mean/Std and normalises internally) and returns rows in INPUT order::

    text = encoder.embed_texts(["a person walks forward", ...])   # (B, D)
    motion = encoder.embed_motions(features, lengths)              # (B, D)
    encoder.distance(text, motion)                                 # (B, B) Euclidean

Guo's embeddings are compared by plain Euclidean distance; TMR's are unit vectors, so their
Euclidean distance is ``sqrt(2 - 2 cos)``, a monotone function of the cosine TMR trains with.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from motion_env.features import FeatureStatsMixin

TEXT_CACHE_SIZE = 10_000  # distinct strings whose text embedding an encoder in eval mode keeps


@dataclass
class TextMotionEncoderOutput(ModelOutput):
    """Output of an encoder's ``forward``.

    Args:
        loss: the family's training loss (Eq. 1 or Eq. 2).
        text_embeddings: ``(B, D)``.
        motion_embeddings: ``(B, D)``.
        positive_loss: Eq. 1's matched-pair term (Guo only).
        negative_loss: Eq. 1's mismatched-pair term (Guo only).
        temperature: the current InfoNCE temperature (TMR only).
    """

    loss: torch.FloatTensor | None = None
    text_embeddings: torch.FloatTensor | None = None
    motion_embeddings: torch.FloatTensor | None = None
    positive_loss: torch.FloatTensor | None = None
    negative_loss: torch.FloatTensor | None = None
    temperature: torch.FloatTensor | None = None


def lengths_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, size)`` bool, True on the first ``lengths[b]`` steps of each row."""
    return torch.arange(size, device=lengths.device) < lengths[:, None]


def excluded_negatives(
    motion_ids: torch.Tensor | None = None,
    caption_ids: torch.Tensor | None = None,
    sentence_embeddings: torch.Tensor | None = None,
    threshold: float = 1.0,
) -> torch.Tensor | None:
    """``(B, B)`` bool: off-diagonal pairs that must not serve as negatives, or None if none given.

    A pair is excluded when both rows show the same motion (``motion_ids``), carry the same
    caption (``caption_ids``), or have captions whose sentence embeddings (unit vectors) have a
    cosine similarity above ``threshold`` (TMR's near-duplicate rule).
    """
    excluded = None
    for ids in (motion_ids, caption_ids):
        if ids is not None:
            same = ids[:, None] == ids[None, :]  # (B, B)
            excluded = same if excluded is None else excluded | same
    if sentence_embeddings is not None and threshold < 1.0:
        near = sentence_embeddings @ sentence_embeddings.T > threshold  # (B, B)
        excluded = near if excluded is None else excluded | near
    if excluded is not None:
        excluded = excluded & ~torch.eye(len(excluded), dtype=torch.bool, device=excluded.device)
    return excluded


def check_texts(texts: Sequence[str]) -> list[str]:
    """A non-empty list of non-blank strings, or a ValueError/TypeError naming the bad entry."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
    if not texts:
        raise ValueError("texts is empty; expected at least one caption")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"texts[{i}] is empty or whitespace only: {text!r}")
    return list(texts)


class TextMotionEncoder(FeatureStatsMixin, PreTrainedModel):
    """What the reward scorer and the metrics call; :class:`GuoEncoder` and :class:`TMREncoder` fill it in.

    Subclasses implement the text path as three steps (so a recipe can compute the expensive
    first step once per caption before training): ``text_features(texts)`` -> one dict of numpy
    arrays per caption, ``collate_text(items)`` -> a padded batch, ``encode_text(**batch)`` ->
    ``(B, D)``; and the motion path as ``encode_motion(normalised (B, T, D), lengths) -> (B, D)``.

    ``embed_texts`` caches results per string (LRU, :data:`TEXT_CACHE_SIZE`) while the model is in
    eval mode; ``train()`` and loading weights clear it. Call :meth:`clear_text_cache` after
    changing weights by any other route.
    """

    main_input_name = "features"
    min_frames = 1  # frames per motion-encoder step: shorter motions are rejected

    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
        self.register_buffer("feature_std", torch.ones(config.feature_dim))
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def _init_weights(self, module):
        # Guo et al. initialise every linear and conv layer with xavier_normal and zero bias.
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.GRU, nn.MultiheadAttention)):
            module._reset_parameters() if isinstance(module, nn.MultiheadAttention) else module.reset_parameters()
        elif isinstance(module, TextMotionEncoder):
            nn.init.zeros_(module.feature_mean)
            nn.init.ones_(module.feature_std)

    # -- input checks --------------------------------------------------------------------------------------------

    def _check_motion(self, features, lengths) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Validated ``(features with zeroed padding (B, T, D), lengths (B,), mask (B, T))``."""
        features = torch.as_tensor(features)
        D = self.config.feature_dim
        if features.ndim != 3 or features.shape[-1] != D or features.shape[0] == 0:
            raise ValueError(f"features must have shape (B, T, {D}) with B >= 1, got {tuple(features.shape)}")
        if not features.is_floating_point():
            raise ValueError(f"features must be floating point, got dtype {features.dtype}")
        B, T, _ = features.shape
        lengths = torch.as_tensor(lengths, device=features.device)
        if lengths.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},) for {B} motions, got {tuple(lengths.shape)}")
        lengths = lengths.long()
        too_short = (lengths < self.min_frames).nonzero().flatten().tolist()
        if too_short:
            i = too_short[0]
            raise ValueError(
                f"lengths[{i}] = {int(lengths[i])}: a motion needs at least {self.min_frames} frames "
                f"(rows too short: {too_short[:10]})"
            )
        if int(lengths.max()) > T:
            raise ValueError(f"lengths must be <= T = {T}, got max {int(lengths.max())}")
        mask = lengths_mask(lengths, T)  # (B, T)
        bad = mask & ~torch.isfinite(features).all(-1)  # (B, T)
        if bad.any():
            rows = bad.any(-1).nonzero().flatten().tolist()
            raise ValueError(f"features contain NaN or Inf in the valid frames of rows {rows[:10]}")
        features = torch.where(mask[..., None], features, features.new_zeros(()))
        return features, lengths, mask

    # -- the front door ------------------------------------------------------------------------------------------

    def embed_motions(self, features, lengths) -> torch.Tensor:
        """Motion embeddings ``(B, D)`` of RAW features ``(B, T, feature_dim)``, in input order.

        Frames at or past ``lengths[b]`` are ignored, so padding never changes a row's embedding.
        Differentiable in ``features`` when gradients are enabled.

        Raises:
            ValueError: wrong shape or width, ``lengths`` of the wrong shape or shorter than
                :attr:`min_frames`, NaN/Inf in valid frames.
        """
        features, lengths, mask = self._check_motion(features, lengths)
        param = next(self.parameters())
        features = features.to(device=param.device, dtype=param.dtype)
        lengths, mask = lengths.to(param.device), mask.to(param.device)
        normalised = self.normalize(features) * mask[..., None]  # (B, T, D), padding stays 0
        return self.encode_motion(normalised, lengths)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``(B, D)`` of free-text captions, in input order (tokenised/tagged internally).

        Raises:
            ValueError: an empty list or an empty/blank caption.
        """
        texts = check_texts(texts)
        if self.training:
            return self._embed_uncached(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        found = {t: self._text_cache[t] for t in texts if t in self._text_cache}
        if missing:
            with torch.no_grad():
                found.update(zip(missing, self._embed_uncached(missing)))
        for text in dict.fromkeys(texts):
            self._text_cache[text] = found[text]
            self._text_cache.move_to_end(text)
        while len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return torch.stack([found[t] for t in texts])  # (B, D)

    def _embed_uncached(self, texts: list[str]) -> torch.Tensor:
        batch = self.collate_text(self.text_features(texts))
        device = next(self.parameters()).device
        return self.encode_text(**{k: v.to(device) for k, v in batch.items()})

    @staticmethod
    def distance(text_embeddings: torch.Tensor, motion_embeddings: torch.Tensor) -> torch.Tensor:
        """Euclidean distances ``(B1, B2)`` between every text row and every motion row."""
        return torch.cdist(text_embeddings.float(), motion_embeddings.float())

    def clear_text_cache(self) -> None:
        """Forget cached text embeddings (needed after changing weights outside ``train``/loading)."""
        self._text_cache.clear()

    def train(self, mode: bool = True):
        self._text_cache.clear()
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._text_cache.clear()
        return super()._load_from_state_dict(*args, **kwargs)

    # -- what a family implements --------------------------------------------------------------------------------

    def text_features(self, texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    @staticmethod
    def collate_text(items: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode_text(self, **text_batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_motion(self, normalised: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def pad_arrays(arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(L_i, ...)`` arrays into a zero-padded ``(B, max L, ...)`` float tensor plus lengths ``(B,)``."""
    lengths = torch.tensor([len(a) for a in arrays], dtype=torch.long)
    out = torch.zeros((len(arrays), int(lengths.max()), *arrays[0].shape[1:]), dtype=torch.float32)
    for i, array in enumerate(arrays):
        out[i, : len(array)] = torch.from_numpy(np.asarray(array, dtype=np.float32))
    return out, lengths


def load_encoder(path: str | Path, **kwargs) -> TextMotionEncoder:
    """Load a saved encoder of either family, chosen by the ``model_type`` in its ``config.json``.

    Weights load as float32 unless ``dtype`` is given: checkpoints may be stored in fp16 to stay
    small, and CPU GRUs do not run in fp16. Other keyword arguments go to ``from_pretrained``.
    """
    kwargs.setdefault("dtype", torch.float32)
    import json

    from reward_models.guo import GuoEncoder
    from reward_models.tmr import TMREncoder

    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing; expected a directory written by save_pretrained")
    model_type = json.loads(config_path.read_text()).get("model_type")
    classes = {GuoEncoder.config_class.model_type: GuoEncoder, TMREncoder.config_class.model_type: TMREncoder}
    if model_type not in classes:
        raise ValueError(f"{config_path}: model_type {model_type!r} is not an encoder; expected one of {list(classes)}")
    return classes[model_type].from_pretrained(path, **kwargs)


def __getattr__(name: str):
    # The two families live in their own files; they are reachable from here too.
    if name in ("GuoEncoder", "GuoEncoderConfig"):
        from reward_models import guo

        return getattr(guo, name)
    if name in ("TMREncoder", "TMREncoderConfig"):
        from reward_models import tmr

        return getattr(tmr, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
