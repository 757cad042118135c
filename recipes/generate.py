"""Generate motion from text and write GIFs plus the motion as ``.npy`` (features and joints).

``python recipes/generate.py --text "a person waves with the left hand" --out wave.gif``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", required=True, help="the prompt")
    parser.add_argument("--out", default="motion.gif", help="GIF path; with several samples, _<i> is appended")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--reward-token", default=None, help="guide with <mm>, <mt> or <perception> (or mm, mt, perception)")
    parser.add_argument("--model", default=None, help="bundle directory with gpt/ and vqvae/ (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    if args.num_samples < 1:
        print(f"error: --num-samples must be >= 1, got {args.num_samples}", file=sys.stderr)
        return 2
    import numpy as np

    from agents.pipeline import TextToMotionPipeline
    from motion_env.render import render_gif

    token = args.reward_token
    if token is not None and not token.startswith("<"):
        token = f"<{token}>"
    start = time.perf_counter()
    try:
        pipe = TextToMotionPipeline.from_pretrained(args.model)
        motion = pipe([args.text], num_samples=args.num_samples, reward_token=token, temperature=args.temperature,
                      top_k=args.top_k, top_p=args.top_p, seed=args.seed)  # fmt: skip
    except (ValueError, TypeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for i in range(args.num_samples):
        stem = out.with_suffix("") if args.num_samples == 1 else out.with_name(f"{out.stem}_{i}")
        frames = int(motion.lengths[i])
        features = motion.features[i, :frames].numpy()
        joints = motion.joints[i, :frames].numpy()
        np.save(f"{stem}_features.npy", features)
        np.save(f"{stem}_joints.npy", joints)
        render_gif(joints, stem.with_suffix(".gif"), caption=args.text)
        print(f"wrote {stem.with_suffix('.gif')} ({frames} frames) and {stem}_features.npy, {stem}_joints.npy")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
