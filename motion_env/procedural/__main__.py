"""``python -m motion_env.procedural --out DIR --num-clips N --seed S``"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m motion_env.procedural", description=__doc__)
    parser.add_argument("--out", required=True, help="output directory (HumanML3D layout)")
    parser.add_argument("--num-clips", type=int, default=2000, help="number of clips to synthesise")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    args = parser.parse_args(argv)

    from motion_env.procedural import generate_dataset

    start = time.perf_counter()
    try:
        out = generate_dataset(args.out, args.num_clips, args.seed, workers=args.workers, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.num_clips} clips to {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
