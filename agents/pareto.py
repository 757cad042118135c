"""Pareto selection of rollouts (SPEC §6, the paper's §4.2 and Algorithm 1).

Every sample of a prompt's group is scored on all K rewards; only the samples that no other
sample of the group dominates enter the PPO update. Sample a dominates sample b iff
``r_k(a) >= r_k(b)`` for every reward k and ``r_j(a) > r_j(b)`` for at least one j, so identical
reward vectors never dominate each other and duplicates on the front all stay.

The filter is vectorised (tensor ops, no Python loop over samples or groups) and exact. Because
dominance is transitive, it first tests every sample against the few strongest samples of its
group (largest reward sums), which dominate most of the rest, and then compares only the
survivors all against all within their groups: O(N²K) at worst, when every sample is on the
front, and far less on typical batches. Rewards are compared one column at a time there, so memory
is one bool per compared pair. Many small groups (a rollout's prompts) skip the stages: every
group's pairs are compared at once in one padded block, in fewer tensor operations. A NaN or Inf
reward is an error upstream and raises instead of silently winning or losing every comparison.

``hypervolume`` measures a front for reports: the exact volume dominated by a set of points
(maximisation) above a reference point, for K ≤ 3.
"""

from __future__ import annotations

import numpy as np
import torch


def _check_rewards(rewards: torch.Tensor) -> None:
    if not isinstance(rewards, torch.Tensor):
        raise TypeError(f"rewards must be a torch.Tensor of shape (N, K), got {type(rewards).__name__}")
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape (N, K), got {tuple(rewards.shape)}")
    if rewards.shape[1] == 0:
        raise ValueError(f"rewards must have at least one reward column, got shape {tuple(rewards.shape)}")
    if rewards.dtype == torch.bool or rewards.is_complex():
        raise ValueError(f"rewards must be real numbers (float or integer), got dtype {rewards.dtype}")
    # A NaN or Inf entry makes its row's sum NaN or Inf; the per-entry test runs only then.
    if torch.isfinite(rewards.sum(dim=1)).all():
        return
    bad = (~torch.isfinite(rewards).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        shown = bad if len(bad) <= 10 else [*bad[:10], "..."]
        raise ValueError(f"rewards must be finite; {len(bad)} row(s) hold NaN or Inf: rows {shown}")


# Rows tested first as dominators: the largest reward sums of each group, which dominate most of
# the rest, so that few rows reach the all-pairs stage.
NUM_STRONG = 8


def _dominates(other: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """Elementwise: whether the reward vector ``other`` dominates ``own``.

    Both hold the K rewards in their first dimension, (K, ...), and broadcast against each other;
    returns the broadcast shape of the rest.
    """
    all_ge = any_gt = None
    # One reward column at a time keeps memory at the pair count instead of K times it.
    for other_k, own_k in zip(other, own):
        ge, gt = other_k >= own_k, other_k > own_k
        all_ge = ge if all_ge is None else all_ge.logical_and_(ge)
        any_gt = gt if any_gt is None else any_gt.logical_or_(gt)
    return all_ge.logical_and_(any_gt)


def _any(mask: torch.Tensor, dim: int) -> torch.Tensor:
    if mask.shape[dim] == 0:
        return mask.any(dim=dim)
    return mask.view(torch.uint8).amax(dim=dim).bool()  # any() over bool, many times faster on CPU


def _layout(sorted_groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense group index and position within the group of each row of grouped (sorted) ids, and the sizes."""
    _, group, counts = torch.unique_consecutive(sorted_groups, return_inverse=True, return_counts=True)
    starts = (counts.cumsum(dim=0) - counts).index_select(0, group)
    return group, torch.arange(len(sorted_groups), device=sorted_groups.device) - starts, counts


# Many small groups are compared all against all in one padded (G, W, W) block when it holds at
# most this many pairs per row (W = 64 for equal groups): fewer tensor ops than the two stages.
BLOCK_PAIRS_PER_ROW = 64


def _block_dominates(other: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """`_dominates` for a small block, in fewer passes: for finite floats the sign of ``other - own`` is
    exactly that of the comparison, so one subtraction and two reductions over K replace 2K
    comparisons (at K floats of memory per pair, which a block keeps small)."""
    if not other.is_floating_point():
        return _dominates(other, own)
    difference = other - own  # (K, ...)
    return (difference.amin(dim=0) >= 0).logical_and_(difference.amax(dim=0) > 0)


def _dominated_in_block(columns: torch.Tensor, group, slot, counts) -> torch.Tensor:
    """Whether another row of its group dominates each row of ``columns`` (K, C), grouped in order,
    with ``group``, ``slot``, ``counts`` their `_layout`: all pairs of every group in one padded
    (G, W, W) block."""
    k = columns.shape[0]
    size, width = len(counts), int(counts.max())
    if size * width == columns.shape[1]:  # groups of equal size: the grouped columns are the block as they are
        block = columns.reshape(k, size, width)
        return _any(_block_dominates(block[..., None], block[:, :, None]), dim=1).flatten()
    cell = group * width + slot  # (C,) position in the flattened (G, W) block
    padded = columns.new_zeros(k, size * width).index_copy_(1, cell, columns).view(k, size, width)
    filled = torch.zeros(size * width, dtype=torch.bool, device=columns.device).index_fill_(0, cell, True)
    pairs = _block_dominates(padded[..., None], padded[:, :, None]).logical_and_(filled.view(size, width, 1))
    return _any(pairs, dim=1).flatten().index_select(0, cell)  # (G, W, W) -> (C,)


def _front_in_one_block(rewards: torch.Tensor, order: torch.Tensor, group, slot, counts) -> torch.Tensor:
    """Non-dominated mask within groups, all pairs of every group at once; ``order`` sorts the rows by
    group and ``group``, ``slot``, ``counts`` are its `_layout`."""
    columns = rewards.detach().T.index_select(1, order)  # (K, N), by group
    on_front = ~_dominated_in_block(columns, group, slot, counts)  # (N,) in sorted order
    return torch.zeros(len(rewards), dtype=torch.bool, device=rewards.device).index_copy_(0, order, on_front)


def _front(rewards: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
    """Non-dominated mask within groups (one group when None), in two vectorised stages.

    Dominance is transitive, so a dominated row is dominated by some row of its group's front.
    Stage 1 drops the rows that one of their group's NUM_STRONG strongest rows dominates: those
    rows are dominated, and no front row is dropped. Stage 2 compares the C survivors, which hold
    the whole front, all against all within each group. The result is the all-pairs definition
    exactly, at O(N·NUM_STRONG·K + C²K): O(N²K) at worst, when every row is on the front.
    """
    rewards = rewards.detach()
    n, k = rewards.shape
    device = rewards.device
    order = torch.argsort(rewards.sum(dim=1), descending=True, stable=True)  # strongest first
    if groups is not None:
        order = order.index_select(0, torch.argsort(groups.index_select(0, order), stable=True))
    # Column-major: each reward's values contiguous, and indexing picks whole columns at once.
    columns = rewards.T.index_select(1, order)  # (K, N), by group, strongest first within each

    if groups is None:
        dominators = columns[:, :NUM_STRONG, None]  # (K, S, 1)
    else:
        group, slot, counts = _layout(groups.index_select(0, order))
        first = torch.arange(n, device=device) - slot  # (N,) each row's group starts here
        last = first + counts.index_select(0, group) - 1  # (N,)
        # The group's S strongest rows, its last row repeated in groups smaller than S.
        top = torch.minimum(first + torch.arange(NUM_STRONG, device=device)[:, None], last)  # (S, N)
        dominators = columns.index_select(1, top.flatten()).view(k, *top.shape)  # (K, S, N)
    survivors = (~_any(_dominates(dominators, columns[:, None]), dim=0)).nonzero().squeeze(dim=1)  # (C,)
    survived = columns.index_select(1, survivors)  # (K, C)

    num = len(survivors)
    if groups is None or num == 0:
        dominated = _any(_dominates(survived[:, :, None], survived[:, None]), dim=0)  # (C,)
    else:
        group, slot, counts = _layout(group.index_select(0, survivors))
        if len(counts) * int(counts.max()) ** 2 < num**2:  # one padded block per group beats the (C, C) square
            dominated = _dominated_in_block(survived, group, slot, counts)
        else:
            pairs = _dominates(survived[:, :, None], survived[:, None]).logical_and_(group[:, None] == group)
            dominated = _any(pairs, dim=0)  # (C, C) -> (C,)

    on_front = order.index_select(0, survivors.masked_select(~dominated))
    return torch.zeros(n, dtype=torch.bool, device=device).index_fill_(0, on_front, True)


def non_dominated_mask(rewards: torch.Tensor) -> torch.Tensor:
    """Which samples of a batch no other sample dominates.

    Args:
        rewards: ``(N, K)`` reward vectors, one row per sample; larger is better in every column.

    Returns:
        ``(N,)`` bool mask on ``rewards``' device, True for the non-dominated samples.

    Raises:
        ValueError: if ``rewards`` is not 2-D, has no columns, or holds NaN/Inf (the rows are named).
    """
    _check_rewards(rewards)
    return _front(rewards, groups=None)


def grouped_non_dominated_mask(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Which samples no other sample *of the same group* dominates.

    Args:
        rewards: ``(N, K)`` reward vectors; larger is better in every column.
        groups: ``(N,)`` integer group ids (e.g. the prompt index); any values, in any order.

    Returns:
        ``(N,)`` bool mask, True for the samples on their own group's front.
    """
    _check_rewards(rewards)
    if not isinstance(groups, torch.Tensor):
        raise TypeError(f"groups must be a torch.Tensor of shape (N,), got {type(groups).__name__}")
    if groups.shape != rewards.shape[:1]:
        raise ValueError(f"groups must have shape ({rewards.shape[0]},) to match rewards {tuple(rewards.shape)}, "
                         f"got {tuple(groups.shape)}")  # fmt: skip
    if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
        raise ValueError(f"groups must be integer group ids, got dtype {groups.dtype}")
    groups = groups.to(rewards.device)
    order = torch.argsort(groups, stable=True)
    group, slot, counts = _layout(groups.index_select(0, order))
    if len(counts) and len(counts) * int(counts.max()) ** 2 <= BLOCK_PAIRS_PER_ROW * len(groups):
        return _front_in_one_block(rewards, order, group, slot, counts)
    return _front(rewards, groups)


def _area_2d(points: np.ndarray) -> float:
    """Area dominated by ``(N, 2)`` points above the origin, all coordinates > 0."""
    order = np.argsort(-points[:, 0], kind="stable")
    xs, ys = points[order, 0], points[order, 1]
    # Between consecutive x's (descending) the union's height is the highest y seen so far.
    widths = xs - np.append(xs[1:], 0.0)
    return float(np.sum(widths * np.maximum.accumulate(ys)))


def hypervolume(points: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor | None = None) -> float:
    """Exact volume dominated by ``points`` (maximisation) and bounded below by ``reference``.

    The volume of the union of the boxes ``[reference, p]`` over the points. A point not strictly
    above the reference in every coordinate contributes nothing; dominated points add nothing.

    Args:
        points: ``(N, K)`` with K in {1, 2, 3}; N may be 0.
        reference: ``(K,)`` lower corner; the origin when None.

    Raises:
        ValueError: for K > 3 (no exact algorithm here), wrong shapes, or NaN/Inf values.
    """
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"points must have shape (N, K), got {points.shape}")
    k = points.shape[1]
    if not 1 <= k <= 3:
        raise ValueError(f"exact hypervolume is implemented for 1 to 3 objectives, got K={k} (points {points.shape})")
    if isinstance(reference, torch.Tensor):
        reference = reference.detach().cpu().numpy()
    reference = np.zeros(k) if reference is None else np.asarray(reference, dtype=np.float64)
    if reference.shape != (k,):
        raise ValueError(f"reference must have shape ({k},) to match points {points.shape}, got {reference.shape}")
    if not np.isfinite(points).all() or not np.isfinite(reference).all():
        rows = np.flatnonzero(~np.isfinite(points).all(axis=1)).tolist()
        raise ValueError(f"points and reference must be finite; NaN or Inf in point rows {rows} "
                         f"or reference {reference.tolist()}")  # fmt: skip

    shifted = points - reference
    shifted = shifted[(shifted > 0).all(axis=1)]
    if len(shifted) == 0:
        return 0.0
    if k == 1:
        return float(shifted.max())
    if k == 2:
        return _area_2d(shifted)
    # K = 3: slabs between consecutive z's (descending); each slab's cross-section is the 2-D
    # area of the points at least that high.
    shifted = shifted[np.argsort(-shifted[:, 2], kind="stable")]
    zs = shifted[:, 2]
    heights = zs - np.append(zs[1:], 0.0)
    return float(sum(h * _area_2d(shifted[: i + 1, :2]) for i, h in enumerate(heights) if h > 0))


# ---- the definition, written out: the reference the tests and the benchmark check the masks against ----


def dominates(a: list[float], b: list[float]) -> bool:
    """a dominates b: at least as good on every reward and better on one."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def reference_non_dominated(rows: list[list[float]]) -> list[bool]:
    """Straight from the definition, O(N²K) in Python: a sample stays unless some sample dominates it."""
    return [not any(dominates(a, b) for a in rows) for b in rows]


def reference_grouped(rows: list[list[float]], groups: list[int]) -> list[bool]:
    """`reference_non_dominated` within each group."""
    keep = [False] * len(rows)
    for group in set(groups):
        members = [i for i, g in enumerate(groups) if g == group]
        for i, kept in zip(members, reference_non_dominated([rows[i] for i in members])):
            keep[i] = kept
    return keep
