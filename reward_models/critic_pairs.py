"""Preference pairs for the perception critic, as aligned ``rot6d`` windows, and its held-out evaluation.

The default critic learns from pairs the project makes (:mod:`motion_env.procedural.degrade`):
a clean clip is preferred over a degraded copy, a milder copy over a stronger one.
:func:`build_pair_windows` degrades each clip, converts every copy to ``rot6d`` with the same
converter ``g`` that the reward uses (so the critic learns on what it will be shown), and cuts
one window per clip at the same frames from every copy. :class:`PairWindows` holds the windows
once and the pairs as index pairs; it is the training dataset, and :func:`evaluate_critic`
reports pairwise accuracy (overall, per artifact) and severity ordering on held-out pairs.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from motion_env.procedural.degrade import ARTIFACTS, SEVERITIES, degraded_versions, pair_plan
from motion_env.skeleton import NUM_JOINTS
from reward_models.critic import NUM_SLOTS, ROOT_SLOT, check_rot6d

CLEAN = "clean"
# A pair whose two motions differ by less than this (metres; the largest per-frame mean joint
# distance within the window) shows nothing to prefer, e.g. a freeze of a motion standing still.
MIN_VISIBLE_CHANGE = 0.01


@dataclass
class PairWindows(torch.utils.data.Dataset):
    """Windows of every copy of some clips, and which pairs of them are preferences.

    Args:
        windows: ``(V, W, 25, 6)`` ``rot6d`` windows (float16 or float32); frames past a
            window's length are padding.
        lengths: ``(V,)`` valid frames per window.
        clip: ``(V,)`` the source clip of each window (an index; pairs never cross clips).
        artifact: ``V`` names, :data:`CLEAN` for an undegraded copy.
        severity: ``(V,)`` severity of each copy, 0 for a clean one.
        pairs: ``(P, 2)`` rows of ``windows``: ``(better, worse)``.

    Items are ``{"better", "worse", "better_lengths", "worse_lengths"}``, the keyword arguments of
    :meth:`reward_models.critic.MotionCritic.forward`.
    """

    windows: torch.Tensor
    lengths: torch.Tensor
    clip: torch.Tensor
    artifact: list[str]
    severity: torch.Tensor
    pairs: torch.Tensor

    def __post_init__(self):
        V = len(self.windows)
        if self.windows.ndim != 4 or self.windows.shape[-2:] != (NUM_SLOTS, 6):
            raise ValueError(f"windows must have shape (V, W, {NUM_SLOTS}, 6), got {tuple(self.windows.shape)}")
        if not (len(self.lengths) == len(self.clip) == len(self.artifact) == len(self.severity) == V):
            raise ValueError(f"lengths, clip, artifact and severity must each have {V} entries (one per window)")
        if (
            self.pairs.ndim != 2
            or self.pairs.shape[1] != 2
            or (len(self.pairs) and not 0 <= self.pairs.min() <= self.pairs.max() < V)
        ):
            raise ValueError(f"pairs must be (P, 2) row indices into the {V} windows, "
                             f"got shape {tuple(self.pairs.shape)}")  # fmt: skip

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        better, worse = self.pairs[index].tolist()
        return {
            "better": self.windows[better].float(),
            "worse": self.windows[worse].float(),
            "better_lengths": self.lengths[better],
            "worse_lengths": self.lengths[worse],
        }

    @property
    def pair_artifacts(self) -> list[str]:
        """The artifact of each pair (that of its worse window)."""
        return [self.artifact[w] for w in self.pairs[:, 1].tolist()]

    @classmethod
    def from_pairs(cls, better: torch.Tensor, worse: torch.Tensor, artifact: str = "motionpercept") -> PairWindows:
        """Ready-made pairs (e.g. MotionPercept's), ``better`` and ``worse`` ``(N, W, 25, 6)``.

        All windows get ``artifact``, severity 0 (preferred) or 1 (the other), and their
        floor-plane positions relative to their first frame, as :func:`build_pair_windows` stores them.
        """
        better, _ = check_rot6d(better, name="better")
        worse, _ = check_rot6d(worse, name="worse")
        better, worse = _recentred(better), _recentred(worse)
        if better.shape != worse.shape:
            raise ValueError(f"better and worse must have the same shape, "
                             f"got {tuple(better.shape)} and {tuple(worse.shape)}")  # fmt: skip
        N, W = better.shape[:2]
        index = torch.arange(N)
        return cls(windows=torch.cat([better, worse]), lengths=torch.full((2 * N,), W, dtype=torch.long),
                   clip=torch.cat([index, index]), artifact=[artifact] * (2 * N),
                   severity=torch.cat([torch.zeros(N), torch.ones(N)]),
                   pairs=torch.stack([index, index + N], dim=1))  # fmt: skip

    @classmethod
    def concat(cls, parts: Sequence[PairWindows]) -> PairWindows:
        """One set from several (windows padded to the longest; clip ids kept apart)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        W = max(p.windows.shape[1] for p in parts)
        dtype = parts[0].windows.dtype
        windows, pairs, clips, offset, clip_offset = [], [], [], 0, 0
        for part in parts:
            pad = W - part.windows.shape[1]
            windows.append(torch.nn.functional.pad(part.windows.to(dtype), (0, 0, 0, 0, 0, pad)))
            pairs.append(part.pairs + offset)
            clips.append(part.clip + clip_offset)
            offset += len(part.windows)
            clip_offset += int(part.clip.max()) + 1 if len(part.clip) else 0
        return cls(windows=torch.cat(windows), lengths=torch.cat([p.lengths for p in parts]), clip=torch.cat(clips),
                   artifact=[a for p in parts for a in p.artifact], severity=torch.cat([p.severity for p in parts]),
                   pairs=torch.cat(pairs))  # fmt: skip


def _recentred(rot6d: torch.Tensor) -> torch.Tensor:
    """``rot6d`` ``(..., W, 25, 6)`` with the pelvis x, z relative to the window's first frame."""
    out = rot6d.clone()
    out[..., ROOT_SLOT, 0] -= rot6d[..., :1, ROOT_SLOT, 0]
    out[..., ROOT_SLOT, 2] -= rot6d[..., :1, ROOT_SLOT, 2]
    return out


def _visible_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=-1).mean(-1).max())


def _convert_all(convert: Callable, clips: list[np.ndarray], batch_size: int) -> list[torch.Tensor]:
    """``rot6d`` of every clip, batched by similar lengths to keep padding small."""
    order = np.argsort([len(c) for c in clips])
    out: list[torch.Tensor | None] = [None] * len(clips)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        T = max(len(clips[i]) for i in rows)
        joints = np.zeros((len(rows), T, NUM_JOINTS, 3), dtype=np.float32)
        for r, i in enumerate(rows):
            joints[r, : len(clips[i])] = clips[i]
            joints[r, len(clips[i]) :] = clips[i][-1]
        lengths = torch.tensor([len(clips[i]) for i in rows])
        rot6d = torch.as_tensor(convert(torch.from_numpy(joints), lengths)).float()  # (b, T, 25, 6)
        for r, i in enumerate(rows):
            out[i] = rot6d[r, : len(clips[i])]
    return out


def build_pair_windows(
    clips: Sequence[np.ndarray],
    convert: Callable,
    *,
    window: int = 60,
    artifacts: Sequence[str] = ARTIFACTS,
    severities: Sequence[float] = SEVERITIES,
    artifacts_per_clip: int | None = None,
    severity_pairs: bool = True,
    min_change: float = MIN_VISIBLE_CHANGE,
    seed: int = 0,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float16,
) -> PairWindows:
    """Degrade, convert and window clean clips into preference pairs.

    Args:
        clips: clean joints ``(T, 22, 3)`` per clip (HumanML3D's, as ``new_joints/`` holds them).
        convert: the converter ``g``, ``convert(joints (B, T, 22, 3), lengths (B,)) -> (B, T, 25, 6)``,
            e.g. ``JointsToSMPL.convert``; every copy is converted whole, then windowed.
        window: frames per window; a clip as long or longer gets one window at a random start,
            the same for all its copies; a shorter clip is taken whole (its windows are padded).
        artifacts, severities: what to degrade with (see :func:`motion_env.procedural.degrade.pair_plan`).
        artifacts_per_clip: degrade each clip with this many of ``artifacts`` only (taken in
            turn, so every artifact is used about equally); all by default.
        severity_pairs: also prefer each milder copy over each stronger copy of an artifact.
        min_change: pairs whose windows differ less than this (see :data:`MIN_VISIBLE_CHANGE`)
            are left out.
        seed: fixes the degradations and the window starts.
        batch_size: clips per converter call.
        dtype: storage type of the windows (float16 halves the memory; floor-plane positions are
            stored relative to the window's first frame, so they stay small and precise).
    """
    artifacts = tuple(artifacts)
    per_clip = len(artifacts) if artifacts_per_clip is None else artifacts_per_clip
    if not 1 <= per_clip <= len(artifacts):
        raise ValueError(f"artifacts_per_clip must be in [1, {len(artifacts)}], got {artifacts_per_clip}")
    if window < 2:
        raise ValueError(f"window must be >= 2 frames, got {window}")
    rng = np.random.default_rng(seed)
    windows, lengths, meta, pair_rows = [], [], [], []
    # A chunk of clips at a time: the degraded joints of all clips at once would not fit in memory.
    for first in range(0, len(clips), batch_size):
        copies, crops = [], []
        for c in range(first, min(first + batch_size, len(clips))):
            clean = np.asarray(clips[c], dtype=np.float64)
            chosen = [artifacts[(c * per_clip + k) % len(artifacts)] for k in range(per_clip)]
            versions = degraded_versions(clean, rng, chosen, severities)
            start = int(rng.integers(0, len(clean) - window + 1)) if len(clean) >= window else 0
            crop = slice(start, start + min(window, len(clean)))
            row = {None: len(meta)}
            meta.append((c, CLEAN, 0.0))
            copies.append(clean)
            for key, joints in versions.items():
                row[key] = len(meta)
                meta.append((c, *key))
                copies.append(joints)
            for plan in pair_plan(chosen, severities, severity_pairs):
                better = clean if plan.better is None else versions[plan.better]
                if _visible_change(better[crop], versions[plan.worse][crop]) >= min_change:
                    pair_rows.append((row[plan.better], row[plan.worse]))
            crops += [crop] * (len(versions) + 1)
        for full, crop in zip(_convert_all(convert, copies, batch_size), crops):
            piece = _recentred(full[crop])  # (w, 25, 6)
            padded = torch.cat([piece, piece[-1:].expand(window - len(piece), -1, -1)])  # (window, 25, 6)
            windows.append(padded.to(dtype))
            lengths.append(len(piece))
    return PairWindows(
        windows=torch.stack(windows) if windows else torch.zeros(0, window, NUM_SLOTS, 6, dtype=dtype),
        lengths=torch.tensor(lengths, dtype=torch.long),
        clip=torch.tensor([m[0] for m in meta], dtype=torch.long),
        artifact=[m[1] for m in meta],
        severity=torch.tensor([m[2] for m in meta], dtype=torch.float32),
        pairs=torch.tensor(pair_rows, dtype=torch.long).reshape(-1, 2),
    )


def _accuracy(correct: torch.Tensor) -> float | None:
    return float(correct.float().mean()) if len(correct) else None


@torch.no_grad()
def evaluate_critic(model, data: PairWindows, batch_size: int = 512) -> dict:
    """Pairwise accuracy and severity ordering of a critic on held-out pairs.

    Returns a JSON-ready dict: ``pairwise_accuracy`` (all pairs; a tie counts as wrong),
    ``clean_vs_degraded_accuracy``, ``severity_pair_accuracy``, ``num_pairs``; per artifact the
    same (``per_artifact``); ``severity_means`` (per artifact, the mean score at each severity,
    ``"0.0"`` being the clean copies of the clips that artifact degraded); ``monotonic`` (per
    artifact, whether that mean falls strictly as the severity rises) and ``monotonic_fraction``.
    """
    was_training = model.training
    model.eval()
    scores = model.score(data.windows.float(), data.lengths, batch_size=batch_size).cpu()  # (V,)
    model.train(was_training)
    better, worse = data.pairs[:, 0], data.pairs[:, 1]
    correct = scores[better] > scores[worse]  # (P,)
    from_clean = torch.tensor([data.artifact[b] == CLEAN for b in better.tolist()], dtype=torch.bool)
    pair_artifacts = data.pair_artifacts
    report = {
        "pairwise_accuracy": _accuracy(correct),
        "clean_vs_degraded_accuracy": _accuracy(correct[from_clean]),
        "severity_pair_accuracy": _accuracy(correct[~from_clean]),
        "num_pairs": len(correct),
        "per_artifact": {},
        "severity_means": {},
        "monotonic": {},
    }
    artifact_of = np.array(data.artifact)
    for name in dict.fromkeys(a for a in data.artifact if a != CLEAN):
        mine = torch.tensor([a == name for a in pair_artifacts], dtype=torch.bool)
        report["per_artifact"][name] = {
            "accuracy": _accuracy(correct[mine]),
            "clean_vs_degraded": _accuracy(correct[mine & from_clean]),
            "severity_pairs": _accuracy(correct[mine & ~from_clean]),
            "num_pairs": int(mine.sum()),
        }
        degraded = torch.from_numpy(artifact_of == name)
        clean = torch.from_numpy(artifact_of == CLEAN) & torch.isin(data.clip, data.clip[degraded])
        means = {"0.0": float(scores[clean].mean())} if clean.any() else {}
        for level in sorted(set(data.severity[degraded].tolist())):
            means[str(round(level, 4))] = float(scores[degraded & (data.severity == level)].mean())
        values = list(means.values())
        report["severity_means"][name] = means
        report["monotonic"][name] = all(a > b for a, b in itertools.pairwise(values))
    if report["monotonic"]:
        report["monotonic_fraction"] = sum(report["monotonic"].values()) / len(report["monotonic"])
    return report


def format_report(report: dict) -> str:
    """The evaluation as a plain-text table."""

    def pct(x):
        return "   -  " if x is None else f"{100 * x:5.1f}%"

    levels = sorted({lvl for means in report["severity_means"].values() for lvl in means}, key=float)
    header = f"{'artifact':<16} {'pairs':>6} {'acc':>7} {'clean>deg':>9} {'sev>sev':>8}  " + " ".join(
        f"{'s=' + lvl:>8}" for lvl in levels
    )
    lines = [header, "-" * len(header)]
    for name, row in report["per_artifact"].items():
        means = report["severity_means"].get(name, {})
        cells = " ".join(f"{means[lvl]:8.3f}" if lvl in means else f"{'':>8}" for lvl in levels)
        flag = "" if report["monotonic"].get(name) else "  (not monotonic)"
        lines.append(f"{name:<16} {row['num_pairs']:>6} {pct(row['accuracy']):>7} {pct(row['clean_vs_degraded']):>9} "
                     f"{pct(row['severity_pairs']):>8}  {cells}{flag}")  # fmt: skip
    lines.append("-" * len(header))
    lines.append(f"{'all':<16} {report['num_pairs']:>6} {pct(report['pairwise_accuracy']):>7} "
                 f"{pct(report['clean_vs_degraded_accuracy']):>9} "
                 f"{pct(report['severity_pair_accuracy']):>8}")  # fmt: skip
    if "monotonic_fraction" in report:
        lines.append(f"severity ordering: mean score falls with severity for "
                     f"{100 * report['monotonic_fraction']:.0f}% of artifacts")  # fmt: skip
    return "\n".join(lines)


def write_report(report: dict, path) -> None:
    """Write the evaluation as JSON."""
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
