"""The three MotionRL rewards as one batched scorer (paper §4.1; Eq. 3, 4, 6 and 12).

>>> scorer = RewardScorer.from_pretrained("checkpoints/default/rewards")
>>> out = scorer(features, lengths, prompts)   # features (B, T, 263) raw, lengths (B,)
>>> out.rewards.shape, out.raw.shape            # (B, 3) normalised, (B, 3) raw

Columns follow ``REWARD_NAMES``: text adherence r_t, motion quality r_m, human preference r_p.
This is the only reward path: the Gymnasium env and the PPO trainer both call it.

Prompts without a ground-truth motion (free text, the env's string prompt sets) still get r_m:
the reference motion embedding of Eq. 4 is then that of the real training motion whose caption
embeds nearest the prompt, per encoder family (the ``reference bank`` stored with the scorer).
r_m so measures how close the sample is to a real motion of a caption like the prompt; with a
ground truth it is Eq. 4 exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from motion_env.export import atomic_path
from motion_env.features import FEATURE_DIM, features_to_joints, length_batches
from reward_models.encoders import pad_arrays
from reward_models.normalize import RewardNormalizer

REWARD_NAMES = ("text_adherence", "motion_quality", "perception")
# The reward-specific prompt suffix of each reward (Appendix B).
REWARD_TOKENS = {"text_adherence": "<mt>", "motion_quality": "<mm>", "perception": "<perception>"}
SCORER_FILE = "scorer.json"
BANK_FILE = "reference_bank.safetensors"
CONVERTER_DIR = "smpl_converter"
CRITIC_DIR = "critic"


@dataclass
class RewardOutput:
    """Rewards of a batch, rows in input order."""

    rewards: torch.Tensor  # (B, 3) normalised (Eq. 12)
    raw: torch.Tensor  # (B, 3) before normalisation
    names: tuple[str, ...] = REWARD_NAMES

    def components(self, i: int) -> dict[str, dict[str, float]]:
        """Row ``i`` as ``{name: {"raw": ..., "normalized": ...}}``."""
        return {
            name: {"raw": float(self.raw[i, k]), "normalized": float(self.rewards[i, k])}
            for k, name in enumerate(self.names)
        }


def check_motions(features: torch.Tensor, lengths: torch.Tensor, name: str = "features") -> None:
    """Raise a ``ValueError`` naming what is wrong with a batch of raw motions."""
    if not isinstance(features, torch.Tensor) or features.ndim != 3:
        shape = tuple(features.shape) if hasattr(features, "shape") else type(features).__name__
        raise ValueError(f"{name} must be a (B, T, {FEATURE_DIM}) tensor, got {shape}")
    if features.shape[-1] != FEATURE_DIM:
        raise ValueError(f"{name} must have {FEATURE_DIM} features per frame, got shape {tuple(features.shape)}")
    if not isinstance(lengths, torch.Tensor) or lengths.shape != features.shape[:1]:
        shape = tuple(lengths.shape) if hasattr(lengths, "shape") else type(lengths).__name__
        raise ValueError(
            f"lengths must be a ({features.shape[0]},) tensor for {name} {tuple(features.shape)}, got {shape}"
        )
    if len(features) == 0:
        raise ValueError(f"{name} is an empty batch")
    bad = torch.nonzero((lengths < 1) | (lengths > features.shape[1])).flatten()
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{name}[{i}] has length {int(lengths[i])}; lengths must be in 1..{features.shape[1]} (zero-length motion?)"
        )
    valid = torch.arange(features.shape[1], device=features.device)[None] < lengths.to(features.device)[:, None]
    finite = torch.isfinite(features).all(-1) | ~valid  # (B, T)
    if not finite.all():
        i = int(torch.nonzero(~finite.all(-1)).flatten()[0])
        raise ValueError(f"{name}[{i}] contains NaN or Inf within its {int(lengths[i])} frames")


class RewardScorer:
    """r_t, r_m and r_p for a batch of motions and prompts, raw and normalised.

    Args:
        encoders: text/motion encoder families (``{"guo": ..., "tmr": ...}``), each with
            ``embed_texts(list[str]) -> (B, D)`` and ``embed_motions(features, lengths) -> (B, D)``.
        converter: joints → SMPL 6D rotations, ``convert(joints, lengths) -> (B, T, 25, 6)`` (g).
        critic: perception model, ``score(rot6d, lengths) -> (B,)`` (C).
        weights: λ_i of Eq. 3 and 4 per family.
        normalizer: Eq. 12 bounds; without one ``rewards`` equals ``raw``.
        bank: per family ``{"text": (N, D), "motion": (N, D)}`` embeddings of real captions and
            their motions, the reference for prompts without ground truth.

    Attributes:
        motion_batch_size: generated motions are embedded and converted in chunks of this many
            rows of similar length (32: about 20% faster than one padded batch of 96 on a CPU).
    """

    motion_batch_size: int = 32

    def __init__(self, encoders: Mapping, converter, critic, weights: Mapping[str, float],
                 normalizer: RewardNormalizer | None = None, bank: Mapping[str, Mapping[str, torch.Tensor]] | None = None):  # fmt: skip
        if not encoders:
            raise ValueError("at least one text/motion encoder family is needed for r_t and r_m")
        missing = set(encoders) - set(weights)
        if missing:
            raise ValueError(f"no weight λ for encoder families {sorted(missing)}; weights has {sorted(weights)}")
        if normalizer is not None and tuple(normalizer.names) != REWARD_NAMES:
            raise ValueError(f"normaliser rewards {normalizer.names} differ from the scorer's {REWARD_NAMES}")
        self.encoders = dict(encoders)
        self.converter, self.critic = converter, critic
        self.weights = {name: float(weights[name]) for name in self.encoders}
        self.normalizer = normalizer
        self.bank = {family: dict(parts) for family, parts in (bank or {}).items()}
        for model in (*self.encoders.values(), converter, critic):
            if isinstance(model, torch.nn.Module):
                model.eval()

    @property
    def device(self) -> torch.device:
        for model in (self.critic, self.converter, *self.encoders.values()):
            if isinstance(model, torch.nn.Module):
                return next(model.parameters()).device
        return torch.device("cpu")

    def to(self, device) -> RewardScorer:
        for model in (*self.encoders.values(), self.converter, self.critic):
            if isinstance(model, torch.nn.Module):
                model.to(device)
        self.bank = {f: {k: v.to(device) for k, v in parts.items()} for f, parts in self.bank.items()}
        return self

    # ---- the rewards -------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, features: torch.Tensor, lengths: torch.Tensor, prompts: Sequence[str],
                 ground_truth: Sequence[torch.Tensor | np.ndarray | None] | None = None) -> RewardOutput:  # fmt: skip
        """Score raw motions ``(B, T, 263)`` with ``lengths (B,)`` against ``prompts`` (B strings).

        ``ground_truth``: per row a raw ``(T', 263)`` motion of the prompt, or ``None`` (then the
        reference bank stands in, see the module docstring).
        """
        raw = self.raw_rewards(features, lengths, prompts, ground_truth)
        rewards = raw if self.normalizer is None else self.normalizer(raw)
        return RewardOutput(rewards=rewards, raw=raw)

    @torch.no_grad()
    def raw_rewards(self, features, lengths, prompts, ground_truth=None) -> torch.Tensor:
        """``(B, 3)`` un-normalised rewards in ``REWARD_NAMES`` order."""
        check_motions(features, lengths)
        prompts = self._check_prompts(prompts, len(features))
        device = self.device
        features, lengths = features.to(device, torch.float32), lengths.to(device)
        references = self._reference_motions(ground_truth, len(features))

        text_adherence = features.new_zeros(len(features))
        motion_quality = features.new_zeros(len(features))
        for family, encoder in self.encoders.items():
            weight = self.weights[family]
            motion_emb = self._by_length(encoder.embed_motions, features, lengths).float()  # (B, D)
            text_emb = encoder.embed_texts(prompts).to(device).float()  # (B, D)
            text_adherence -= weight * ((text_emb - motion_emb) ** 2).sum(-1)  # Eq. 3
            reference_emb = self._reference_embeddings(family, encoder, references, text_emb)
            motion_quality -= weight * ((reference_emb - motion_emb) ** 2).sum(-1)  # Eq. 4

        perception = self._by_length(self._perception, features, lengths)  # (B,)

        raw = torch.stack([text_adherence, motion_quality, perception], dim=-1)  # (B, 3)
        if not torch.isfinite(raw).all():
            rows = torch.nonzero(~torch.isfinite(raw).all(-1)).flatten().tolist()
            raise FloatingPointError(f"non-finite rewards for rows {rows[:10]} although their inputs were finite")
        return raw

    def _perception(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        joints = features_to_joints(features)  # (B, T, 22, 3)
        rot6d = self.converter.convert(joints, lengths)  # (B, T, 25, 6), g of Eq. 6
        return self.critic.score(rot6d, lengths).float()  # (B,), C of Eq. 6

    def _by_length(self, fn, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``fn(features, lengths)`` over `length_batches` of ``motion_batch_size`` rows, in input order."""
        batches, inverse = length_batches(lengths, self.motion_batch_size)
        parts = [fn(features[rows, : int(lengths[rows].max())], lengths[rows]) for rows in batches]
        return torch.cat(parts)[inverse]

    @staticmethod
    def _check_prompts(prompts, batch: int) -> list[str]:
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError(f"prompts must be a list of {batch} strings, got {type(prompts).__name__}")
        if len(prompts) != batch:
            raise ValueError(f"got {len(prompts)} prompts for {batch} motions; one prompt per motion is needed")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"prompts[{i}] must be a non-empty string, got {prompt!r}")
        return list(prompts)

    def _reference_motions(self, ground_truth, batch: int) -> list[torch.Tensor | None]:
        if ground_truth is None:
            return [None] * batch
        if len(ground_truth) != batch:
            raise ValueError(f"got {len(ground_truth)} ground-truth entries for {batch} motions")
        out, converted = [], {}  # a motion given for several rows (one per sample of a prompt) is read once
        for i, given in enumerate(ground_truth):
            if given is None or id(given) in converted:
                out.append(None if given is None else converted[id(given)])
                continue
            motion = torch.as_tensor(given, dtype=torch.float32)
            if motion.ndim != 2 or motion.shape[-1] != FEATURE_DIM or len(motion) == 0:
                raise ValueError(
                    f"ground_truth[{i}] must be a (T > 0, {FEATURE_DIM}) motion, got {tuple(motion.shape)}"
                )
            if not torch.isfinite(motion).all():
                raise ValueError(f"ground_truth[{i}] contains NaN or Inf")
            converted[id(given)] = motion
            out.append(motion)
        return out

    def _reference_embeddings(self, family, encoder, references, text_emb) -> torch.Tensor:
        """``(B, D)`` motion embeddings of each row's ground truth, or of the bank's nearest caption."""
        out = torch.empty_like(text_emb)
        given = [i for i, m in enumerate(references) if m is not None]
        if given:
            distinct = {id(references[i]): references[i] for i in given}  # rows sharing a motion share its embedding
            position = {key: j for j, key in enumerate(distinct)}
            padded, lengths = pad_arrays(list(distinct.values()))
            embeddings = encoder.embed_motions(padded.to(out.device), lengths.to(out.device)).float()
            out[given] = embeddings[[position[id(references[i])] for i in given]]
        missing = [i for i, m in enumerate(references) if m is None]
        if missing:
            if family not in self.bank:
                raise ValueError(
                    f"rows {missing[:10]} have no ground-truth motion and the scorer has no reference bank "
                    f"for encoder family {family!r}; pass ground_truth or build the scorer with a bank"
                )
            bank = self.bank[family]
            distances = torch.cdist(text_emb[missing], bank["text"].float())  # (M, N)
            out[missing] = bank["motion"].float()[distances.argmin(-1)]
        return out

    # ---- saving and loading ------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write every part: encoders, converter and critic in subfolders, then the scorer's own files."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for family, encoder in self.encoders.items():
            encoder.save_pretrained(directory / family)
        self.converter.save_pretrained(directory / CONVERTER_DIR)
        self.critic.save_pretrained(directory / CRITIC_DIR)
        if self.bank:
            tensors = {f"{family}.{part}": t.detach().cpu().contiguous() for family, parts in self.bank.items()
                       for part, t in parts.items()}  # fmt: skip
            with atomic_path(directory / BANK_FILE) as tmp:
                save_file(tensors, str(tmp))
        config = {
            "reward_names": list(REWARD_NAMES),
            "encoders": list(self.encoders),
            "weights": self.weights,
            "normalizer": None if self.normalizer is None else self.normalizer.to_dict(),
            "no_ground_truth": "nearest caption in the reference bank" if self.bank else "error",
        }
        with atomic_path(directory / SCORER_FILE) as tmp:
            tmp.write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device=None, dtype=torch.float32) -> RewardScorer:
        """Load a scorer saved by :meth:`save_pretrained` (e.g. ``checkpoints/default/rewards``)."""
        from transformers import AutoModel

        import reward_models  # noqa: F401  (registers the model types with transformers)

        directory = Path(directory)
        path = directory / SCORER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: missing {SCORER_FILE}; not a reward scorer directory")
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if tuple(config.get("reward_names", ())) != REWARD_NAMES:
            raise ValueError(f"{path}: reward_names {config.get('reward_names')} differ from {list(REWARD_NAMES)}")

        def load(sub: str):
            if not (directory / sub).is_dir():
                raise FileNotFoundError(f"{directory / sub}: missing; the scorer needs this model")
            return AutoModel.from_pretrained(directory / sub, dtype=dtype)

        encoders = {family: load(family) for family in config["encoders"]}
        bank = {}
        if (directory / BANK_FILE).is_file():
            for key, tensor in load_file(str(directory / BANK_FILE)).items():
                family, part = key.split(".", 1)
                bank.setdefault(family, {})[part] = tensor.to(dtype)
        normalizer = RewardNormalizer.from_dict(config["normalizer"]) if config.get("normalizer") else None
        scorer = cls(encoders, load(CONVERTER_DIR), load(CRITIC_DIR), config["weights"], normalizer, bank)
        return scorer.to(device) if device is not None else scorer
