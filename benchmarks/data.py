"""Data pipeline throughput: procedural generation, feature conversion, dataset loading.

``python benchmarks/data.py --clips 200 --workers 2 --seed 0``

Prints one table; every ratio compares numbers measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

REPEATS = 3
PROJECTED_CLIPS = 2000


def _once_seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _median_seconds(fn, repeats: int = REPEATS) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one untimed warm-up call."""
    fn()
    return statistics.median(_once_seconds(fn)[0] for _ in range(repeats))


def bench_generation(tmp: Path, clips: int, workers: int, seed: int) -> tuple[list[tuple], Path]:
    from motion_env.procedural import generate_dataset

    out = tmp / "procedural"

    def generate(num_workers: int, num_clips: int) -> None:
        generate_dataset(out, num_clips, seed, workers=num_workers, progress=False, overwrite=True)

    def seconds(num_workers: int) -> float:
        generate(num_workers, min(clips, 8))  # a small warm-up: imports and the first pool start
        return statistics.median(_once_seconds(lambda: generate(num_workers, clips))[0] for _ in range(REPEATS))

    serial = seconds(1)
    parallel = seconds(workers)  # leaves `clips` clips at `out` for the later sections
    rows = [
        ("generation, 1 worker", clips / serial, "clips/s", f"median of {REPEATS}, {clips} clips"),
        (f"generation, {workers} workers", clips / parallel, "clips/s", f"{serial / parallel:.2f}x vs 1 worker"),
        (f"projected {PROJECTED_CLIPS} clips, {workers} workers", PROJECTED_CLIPS * parallel / clips, "s",
         f"1 worker: {PROJECTED_CLIPS * serial / clips:.0f} s"),
    ]  # fmt: skip
    return rows, out


def bench_features(root: Path) -> list[tuple]:
    import numpy as np
    import torch

    from motion_env.features import features_to_joints, joints_to_features

    ids = (root / "all.txt").read_text().split()
    joints = [np.load(root / "new_joints" / f"{clip_id}.npy") for clip_id in ids]  # each (T, 22, 3)
    features = [joints_to_features(clip) for clip in joints]  # each (T-1, 263)
    lengths = [len(clip) for clip in features]
    in_frames = sum(len(clip) for clip in joints)
    out_frames = sum(lengths)

    padded = torch.zeros(len(features), max(lengths), features[0].shape[-1])  # (B, T, 263)
    for i, clip in enumerate(features):
        padded[i, : len(clip)] = torch.from_numpy(clip)
    batched = features_to_joints(padded)  # (B, T, 22, 3)
    for i, clip in enumerate(features):
        if not np.allclose(batched[i, : len(clip)].numpy(), features_to_joints(clip), atol=1e-4):
            raise RuntimeError(f"batched features_to_joints disagrees with per-clip on clip {ids[i]}")

    to_features = _median_seconds(lambda: [joints_to_features(clip) for clip in joints])
    per_clip = _median_seconds(lambda: [features_to_joints(clip) for clip in features], repeats=5)
    at_once = _median_seconds(lambda: features_to_joints(padded), repeats=5)
    # On few shared cores torch's intra-op threads sometimes stall for tens of milliseconds;
    # the single-thread run shows whether a slow batched number is that rather than the code.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    at_once_single = _median_seconds(lambda: features_to_joints(padded), repeats=5)
    torch.set_num_threads(threads)

    batch, max_length = padded.shape[:2]
    shape = f"B={batch}, T={max_length}, {1 - out_frames / (batch * max_length):.0%} padding"
    return [
        ("joints_to_features", in_frames / to_features, "frames/s",
         f"{len(ids)} clips, mean T={in_frames / len(ids):.0f}"),
        ("joints_to_features", len(ids) / to_features, "clips/s", ""),
        ("features_to_joints, per clip (numpy)", out_frames / per_clip, "frames/s", f"{threads} torch threads"),
        ("features_to_joints, batched (torch)", out_frames / at_once, "frames/s",
         f"{per_clip / at_once:.1f}x vs per clip; {threads} threads; {shape}"),
        ("features_to_joints, batched (torch)", out_frames / at_once_single, "frames/s",
         f"{per_clip / at_once_single:.1f}x vs per clip; 1 thread"),
    ]  # fmt: skip


def bench_loading(root: Path, tmp: Path) -> list[tuple]:
    import datasets

    from motion_env.datasets import load_humanml3d

    datasets.disable_progress_bars()
    cache = tmp / "hf_cache"
    first, dataset = _once_seconds(lambda: load_humanml3d(root, "train", cache_dir=cache))
    cached = _median_seconds(lambda: load_humanml3d(root, "train", cache_dir=cache))
    rows = len(dataset)
    return [
        ("load_humanml3d train, first", rows / first, "rows/s", f"{first:.2f} s for {rows} rows"),
        ("load_humanml3d train, cached", rows / cached, "rows/s",
         f"{cached * 1e3:.0f} ms; {first / cached:.0f}x vs first"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200, help="clips to generate and measure")
    parser.add_argument("--workers", type=int, default=2, help="processes for the parallel generation run")
    parser.add_argument("--seed", type=int, default=0, help="procedural dataset seed")
    args = parser.parse_args(argv)
    if args.clips < 1:
        raise ValueError(f"--clips must be at least 1, got {args.clips}")
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows, root = bench_generation(tmp, args.clips, args.workers, args.seed)
        rows += bench_features(root)
        rows += bench_loading(root, tmp)

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)\n")
    print("| quantity | value | unit | ratio/notes |")
    print("|---|---:|---|---|")
    for quantity, value, unit, notes in rows:
        print(f"| {quantity} | {value:,.1f} | {unit} | {notes} |")


if __name__ == "__main__":
    main()
