"""Figures: reward vectors (pairwise projections, Pareto fronts highlighted) and training curves.

Drawn with matplotlib's Agg canvas directly (no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

DEFAULT_NAMES = ("text adherence", "motion quality", "perception")


def _figure(rows: int, columns: int, width: float, height: float):
    """A constrained-layout figure on its own Agg canvas and its axes, flattened."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * columns, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(rows, columns)).ravel()


def _save(fig, path: str | Path, title: str | None) -> Path:
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def _as_sets(sets) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if isinstance(sets, tuple) and len(sets) == 2:
        sets = {"samples": sets}
    if not isinstance(sets, dict) or not sets:
        raise ValueError("sets must be a non-empty dict {name: (vectors (N, K), front_mask (N,))} "
                         f"or one (vectors, front_mask) tuple, got {type(sets).__name__}")  # fmt: skip
    checked, k = {}, None
    for name, (vectors, front_mask) in sets.items():
        vectors = np.asarray(vectors, dtype=np.float64)
        front_mask = np.asarray(front_mask)
        if vectors.ndim != 2:
            raise ValueError(f"set {name!r}: vectors must have shape (N, K), got {vectors.shape}")
        if front_mask.shape != vectors.shape[:1] or front_mask.dtype != np.bool_:
            raise ValueError(f"set {name!r}: front_mask must be bool of shape ({vectors.shape[0]},), "
                             f"got {front_mask.dtype} {front_mask.shape}")  # fmt: skip
        if k is not None and vectors.shape[1] != k:
            raise ValueError(f"set {name!r} has {vectors.shape[1]} rewards, the sets before it {k}")
        k = vectors.shape[1]
        checked[str(name)] = (vectors, front_mask)
    return checked


def plot_reward_front(
    sets: dict[str, tuple[np.ndarray, np.ndarray]] | tuple[np.ndarray, np.ndarray],
    path: str | Path,
    names: tuple[str, ...] = DEFAULT_NAMES,
    title: str | None = None,
) -> Path:
    """Write a PNG of every pairwise 2-D projection of reward vectors, fronts highlighted.

    Args:
        sets: ``{name: (vectors (N, K), front_mask (N,) bool)}``, e.g. ``{"base": ..., "fine-tuned": ...}``;
            each set gets its own colour, its front drawn filled and its other samples faint.
            A bare ``(vectors, front_mask)`` tuple is one set named "samples".
        path: where the PNG goes (parent folders are created).
        names: one axis label per reward column.
        title: the figure's title.

    Returns:
        The path written.
    """
    sets = _as_sets(sets)
    k = next(iter(sets.values()))[0].shape[1]
    if k < 2:
        raise ValueError(f"need at least 2 reward columns to draw a projection, got {k}")
    if len(names) != k:
        raise ValueError(f"names must give one label per reward column ({k}), got {len(names)}: {names}")

    pairs = list(combinations(range(k), 2))
    fig, axes = _figure(1, len(pairs), 4.5, 4.2)
    for ax, (i, j) in zip(axes, pairs):
        for index, (name, (vectors, front)) in enumerate(sets.items()):
            colour = f"C{index % 10}"
            # zorder keeps every set's front above every set's dominated samples.
            ax.scatter(vectors[~front, i], vectors[~front, j], s=10, color=colour, alpha=0.15, linewidths=0,
                       zorder=1, label=f"{name}: dominated ({int((~front).sum())})")  # fmt: skip
            ax.scatter(vectors[front, i], vectors[front, j], s=36, color=colour, marker="D", edgecolors="black",
                       linewidths=0.6, zorder=2, label=f"{name}: front ({int(front.sum())})")  # fmt: skip
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small", loc="best")
    return _save(fig, path, title)


# Panels of `plot_training_curves`: a title and the logged keys drawn in it (TRL's metric names).
TRAINING_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rewards (normalised, rollout means)",
     ("rewards/text_adherence/mean", "rewards/motion_quality/mean", "rewards/perception/mean")),
    ("score and score − β·KL", ("objective/scores", "objective/rlhf_reward")),
    ("KL to the reference (per sample)", ("objective/kl",)),
    ("Pareto front (fraction of the rollout)", ("pareto/front_fraction",)),
    ("policy entropy (per token)", ("policy/entropy",)),
    ("PPO clip fraction and approx. KL", ("policy/clipfrac", "policy/approx_kl")),
)  # fmt: skip


CURVE_SMOOTHING = 5  # logs per trailing mean in `plot_training_curves`


def logged_panels(log_history: list[dict] | None, panels=TRAINING_PANELS) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The panels ``log_history`` logged anything for: ``(title, {key: (2, n) steps and values})``, in order."""
    drawn = []
    for name, keys in panels:
        series = {}
        for key in keys:
            points = [(entry["step"], entry[key]) for entry in log_history or () if key in entry and "step" in entry]
            if points:
                series[key] = np.asarray(points, dtype=np.float64).T
        if series:
            drawn.append((name, series))
    return drawn


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of each point and the ``window - 1`` before it (fewer at the start)."""
    sums = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def plot_training_curves(
    log_history: list[dict],
    path: str | Path,
    panels: tuple[tuple[str, tuple[str, ...]], ...] = TRAINING_PANELS,
    smoothing: int = CURVE_SMOOTHING,
    title: str | None = None,
) -> Path:
    """Write a PNG of logged training metrics against the optimizer step.

    Args:
        log_history: ``trainer.state.log_history``: dicts with a ``step`` and the logged values.
        path: where the PNG goes (parent folders are created).
        panels: ``(title, keys)`` per panel; panels none of whose keys were logged are left out.
        smoothing: each key is drawn faint as logged and solid as a trailing mean over this many logs.
        title: the figure's title.

    Returns:
        The path written.
    """
    if smoothing < 1:
        raise ValueError(f"smoothing must be >= 1, got {smoothing}")
    drawn = logged_panels(log_history, panels)
    if not drawn:
        wanted = sorted({k for _, keys in panels for k in keys})
        raise ValueError(f"log_history has none of the keys to plot ({', '.join(wanted)}); "
                         "pass trainer.state.log_history after training with logging on")  # fmt: skip

    columns = min(3, len(drawn))
    rows = -(-len(drawn) // columns)
    fig, axes = _figure(rows, columns, 4.4, 3.3)
    for ax, (name, series) in zip(axes, drawn):
        for index, (key, (steps, values)) in enumerate(series.items()):
            colour = f"C{index % 10}"
            ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(steps, _trailing_mean(values, smoothing), color=colour, linewidth=1.6,
                    label=key.removeprefix("rewards/").removesuffix("/mean"))  # fmt: skip
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize="small", loc="best")
    for ax in axes[len(drawn) :]:
        ax.set_visible(False)
    return _save(fig, path, title)
