"""The vectorised Pareto filter against the definition written as a Python double loop.

``python benchmarks/pareto.py --num 1024 --rewards 3 --groups 32 --repeats 5``

Both run on the same random rewards with ties and duplicate vectors, and must agree. Three kinds
of data, because the loop stops at a row's first dominator and so its cost depends on them:
integers from ``--levels`` values (heavy ties, a tiny front: the loop's best case), normal
scores rounded to 0.1 (like normalised rewards), and integer points on one plane (every row on
the front: the loop's and the filter's worst case). For each, the whole-batch mask and the
grouped mask (``--groups`` prompts of ``--num / --groups`` samples, interleaved; the loop runs
group by group) are timed in this one process: one warm-up call, then the median of
``--repeats``. Target: the vectorised mask ≥ 50× the loop. The grouped loop only compares rows
within a group (N²/G pairs), so its ratio is lower. Run it alone: a machine shared with other
jobs distorts both timings.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

TARGET_SPEEDUP = 50.0


def _median_seconds(fn, repeats: int, synchronize) -> tuple[float, object]:
    out = fn()  # warm-up
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=1024, help="samples in the batch")
    parser.add_argument("--rewards", type=int, default=3, help="reward columns K")
    parser.add_argument("--groups", type=int, default=32, help="prompt groups for the grouped mask")
    parser.add_argument("--levels", type=int, default=8, help="distinct integer values per reward (ties)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.num % args.groups:
        print(f"error: --num {args.num} is not a multiple of --groups {args.groups}", file=sys.stderr)
        return 2

    import torch

    from agents.pareto import grouped_non_dominated_mask, non_dominated_mask, reference_grouped, reference_non_dominated

    device = torch.device(args.device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.num, args.rewards)
    plane = torch.randint(0, args.levels, (args.num, args.rewards - 1), generator=generator)
    datasets = {
        f"{args.levels} integer levels": torch.randint(0, args.levels, shape, generator=generator).float(),
        "normal, rounded to 0.1": (torch.randn(shape, generator=generator) * 10).round() / 10,
        "one plane (all front)": torch.cat([plane, -plane.sum(dim=1, keepdim=True)], dim=1).float(),
    }
    groups = torch.arange(args.groups).repeat_interleave(args.num // args.groups)
    groups = groups[torch.randperm(args.num, generator=generator)]  # groups interleaved, as rows may come
    group_ids = groups.tolist()
    groups = groups.to(device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"{args.num} samples × {args.rewards} rewards, grouped: {args.groups} × {args.num // args.groups}")  # fmt: skip

    results = []
    for data, rewards in datasets.items():
        rows = rewards.tolist()
        rewards = rewards.to(device)
        duplicates = args.num - len({tuple(r) for r in rows})
        for label, vectorised, loop in [
            ("whole batch", lambda: non_dominated_mask(rewards), lambda: reference_non_dominated(rows)),
            ("grouped", lambda: grouped_non_dominated_mask(rewards, groups), lambda: reference_grouped(rows, group_ids)),
        ]:  # fmt: skip
            fast, mask = _median_seconds(vectorised, args.repeats, synchronize)
            slow, expected = _median_seconds(loop, args.repeats, lambda: None)
            if mask.tolist() != expected:
                print(f"error: {data}, {label}: vectorised mask and reference loop disagree", file=sys.stderr)
                return 1
            results.append((data, duplicates, label, int(mask.sum()), fast, slow))

    print(
        f"\n{'data':<24} {'dup rows':>8} {'mask':<12} {'front':>6} {'vectorised ms':>14} {'loop ms':>10} {'speed-up':>9}"
    )
    for data, duplicates, label, front, fast, slow in results:
        print(f"{data:<24} {duplicates:8d} {label:<12} {front:6d} {1000 * fast:14.3f} {1000 * slow:10.1f} "
              f"{slow / fast:8.0f}×")  # fmt: skip
    print("\nall masks agree with the loop")
    for mask in ("whole batch", "grouped"):
        worst = min(slow / fast for _, _, label, _, fast, slow in results if label == mask)
        verdict = "met" if worst >= TARGET_SPEEDUP else "NOT met"
        print(f"{mask}: lowest speed-up {worst:.0f}× (target ≥ {TARGET_SPEEDUP:.0f}×: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
