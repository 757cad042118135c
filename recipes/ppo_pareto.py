"""Main job: Pareto-filtered multi-reward PPO fine-tuning of a text-to-motion generator.

``accelerate launch recipes/ppo_pareto.py``

The trainer, the generator and the rewards are not implemented yet. What runs today is the
first stage of the job: building the embedded default dataset (procedural text-motion pairs in
HumanML3D's layout) that every later stage trains on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/procedural", help="dataset directory (HumanML3D layout)")
    parser.add_argument("--num-clips", type=int, default=2000, help="clips to generate when --data is empty")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from motion_env.datasets import load_humanml3d
    from motion_env.procedural import generate_dataset

    data = Path(args.data)
    if not (data / "train.txt").is_file():
        print(f"building the embedded default dataset in {data} ({args.num_clips} clips, seed {args.seed})")
        generate_dataset(data, args.num_clips, args.seed, overwrite=data.exists())
    train = load_humanml3d(data, "train")
    print(f"dataset ready: {len(train)} training captions over {len(set(train['clip_id']))} clips in {data}")
    print("PPO fine-tuning is not implemented yet: the generator, rewards and trainer come next.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
