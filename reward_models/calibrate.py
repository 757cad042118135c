"""Fitting the scorer's constants from data: λ of Eq. 3/4, the reference bank, Eq. 12's bounds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from tqdm.auto import tqdm

from reward_models.encoders import pad_arrays
from reward_models.normalize import DEFAULT_PERCENTILES, RewardNormalizer


def batches(num: int, batch_size: int):
    for start in range(0, num, batch_size):
        yield slice(start, min(start + batch_size, num))


def family_weights(pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """λ_i of Eq. 3 and 4: ``1 / (n_families · mean matched squared distance)`` per family.

    Encoder families live on different scales (Guo's Euclidean space with margin 10, TMR's unit
    sphere); this weighting makes each contribute about equally, and r_t of real pairs about −1.
    """
    weights = {}
    for family, (text_emb, motion_emb) in pairs.items():
        mean_sq = float(((text_emb - motion_emb) ** 2).sum(-1).mean())
        if not mean_sq > 0:
            raise ValueError(f"encoder family {family!r}: matched pairs are all at distance 0; cannot set λ")
        weights[family] = 1.0 / (len(pairs) * mean_sq)
    return weights


def reference_bank(pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]], dtype=torch.float16) -> dict:
    """The scorer's stand-in ground truth for free-text prompts: caption and motion embeddings."""
    return {family: {"text": t.to(dtype), "motion": m.to(dtype)} for family, (t, m) in pairs.items()}


def fit_normalizer(raw_sets: Sequence[torch.Tensor], names: Sequence[str],
                   percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> RewardNormalizer:  # fmt: skip
    """Eq. 12's bounds from the pooled raw rewards of ground-truth and base-model samples."""
    return RewardNormalizer.fit(torch.cat([r.float().cpu() for r in raw_sets]), names, percentiles)


@torch.no_grad()
def score_in_batches(scorer, motions, prompts, ground_truth=None, batch_size: int = 64, desc: str = "scoring"):
    """Raw ``(N, 3)`` rewards of lists of raw motions, in batches, with a progress bar."""
    out = []
    for part in tqdm(list(batches(len(motions), batch_size)), desc=desc, leave=False):
        features, lengths = pad_arrays(motions[part])
        gt = None if ground_truth is None else list(ground_truth[part])
        out.append(scorer.raw_rewards(features, lengths, list(prompts[part]), gt).cpu())
    return torch.cat(out)
