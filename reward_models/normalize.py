"""Putting the three rewards on one scale (Appendix C, Eq. 12).

Each reward k is mapped by r̃ = (r − min_k) / (max_k − min_k). The paper's min_k/max_k are rough
estimates and normalised values may leave [0, 1] a little; as printed, the three branches of
Eq. 12 reduce to this one unclipped line, so nothing is clipped here either. The bounds are
estimated from data (low/high percentiles of the raw rewards of ground-truth and base-model
samples) and stored with the scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_PERCENTILES = (5.0, 95.0)


@dataclass(frozen=True)
class RewardNormalizer:
    """Per-reward affine map of Eq. 12; ``low[k]`` maps to 0 and ``high[k]`` to 1."""

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self):
        if not (len(self.names) == len(self.low) == len(self.high)):
            raise ValueError(
                f"names, low and high must have one entry per reward, got {len(self.names)}, "
                f"{len(self.low)} and {len(self.high)}"
            )
        for name, lo, hi in zip(self.names, self.low, self.high):
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise ValueError(f"reward {name!r}: bounds must be finite, got low={lo}, high={hi}")
            if not hi > lo:
                raise ValueError(f"reward {name!r}: high must exceed low, got low={lo}, high={hi}")

    @classmethod
    def fit(
        cls,
        raw: np.ndarray | torch.Tensor,
        names: Sequence[str],
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    ) -> RewardNormalizer:
        """Bounds from the ``percentiles`` of each column of ``raw`` ``(N, K)``."""
        raw = np.asarray(raw.detach().cpu() if isinstance(raw, torch.Tensor) else raw, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != len(names) or len(raw) < 2:
            raise ValueError(f"raw must be (N >= 2, {len(names)}) for rewards {list(names)}, got shape {raw.shape}")
        if not np.isfinite(raw).all():
            raise ValueError("raw rewards contain NaN or Inf; the bounds would be meaningless")
        lo_pct, hi_pct = percentiles
        if not 0.0 <= lo_pct < hi_pct <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
        low = np.percentile(raw, lo_pct, axis=0)
        high = np.percentile(raw, hi_pct, axis=0)
        for k, name in enumerate(names):
            if not high[k] > low[k]:
                raise ValueError(
                    f"reward {name!r} is constant over the {len(raw)} calibration samples ({low[k]:.4g}); "
                    "calibrate on more varied motions"
                )
        return cls(tuple(names), tuple(float(x) for x in low), tuple(float(x) for x in high))

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        """``(..., K)`` raw rewards → ``(..., K)`` normalised rewards (Eq. 12)."""
        if raw.shape[-1] != len(self.names):
            raise ValueError(f"expected {len(self.names)} rewards on the last axis, got shape {tuple(raw.shape)}")
        low = raw.new_tensor(self.low)
        high = raw.new_tensor(self.high)
        return (raw - low) / (high - low)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, data: dict) -> RewardNormalizer:
        try:
            return cls(tuple(data["names"]), tuple(map(float, data["low"])), tuple(map(float, data["high"])))
        except KeyError as err:
            raise ValueError(f"reward normaliser needs 'names', 'low' and 'high'; missing {err}") from err
