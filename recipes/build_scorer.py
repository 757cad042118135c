"""Assemble the batched reward scorer from trained parts and calibrate it on data.

``python recipes/build_scorer.py --guo G --tmr T --converter C --critic P --generator BUNDLE --out BUNDLE/rewards``

Fits, on the training split only: λ of Eq. 3/4 per encoder family (each family's matched pairs
at mean squared distance 1/n_families), the reference bank used for prompts without ground truth,
and Eq. 12's bounds from the 5th/95th percentiles of the raw rewards of ground-truth motions and
of base-model samples (temperature 1.0 and the PPO sampling temperature 1.5). Writes the scorer
directory and ``calibration.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, what in (("guo", "Guo-style encoder"), ("tmr", "TMR-style encoder"),
                       ("converter", "joints→SMPL converter"), ("critic", "perception critic")):  # fmt: skip
        parser.add_argument(f"--{name}", required=True, help=f"{what} directory")
    parser.add_argument(
        "--generator", required=True, help="bundle with gpt/ and vqvae/: the base model to calibrate on"
    )
    parser.add_argument("--data_dir", default="data/procedural")
    parser.add_argument("--out", required=True, help="scorer directory to write")
    parser.add_argument("--bank_size", type=int, default=1024, help="training captions in the reference bank")
    parser.add_argument("--calibration_prompts", type=int, default=512, help="training captions scored for Eq. 12")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    import numpy as np
    import torch

    from agents.pipeline import TextToMotionPipeline
    from motion_env.datasets import load_humanml3d
    from reward_models.calibrate import family_weights, fit_normalizer, reference_bank, score_in_batches
    from reward_models.critic import MotionCritic
    from reward_models.encoders import load_encoder, pad_arrays
    from reward_models.metrics import embed_pairs
    from reward_models.rewards import REWARD_NAMES, RewardScorer
    from reward_models.smpl import JointsToSMPL

    start = time.time()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    encoders = {"guo": load_encoder(args.guo), "tmr": load_encoder(args.tmr)}
    converter = JointsToSMPL.from_pretrained(args.converter, dtype=torch.float32)
    critic = MotionCritic.from_pretrained(args.critic, dtype=torch.float32)
    train = load_humanml3d(args.data_dir, "train")

    rows = train.select(rng.permutation(len(train))[: args.bank_size])
    motions, captions = [np.asarray(m) for m in rows["motion"]], list(rows["caption"])
    features, lengths = pad_arrays(motions)
    pairs = {family: tuple(torch.from_numpy(e).float() for e in embed_pairs(encoder, captions, features, lengths, batch_size=64))
             for family, encoder in encoders.items()}  # fmt: skip
    scorer = RewardScorer(encoders, converter, critic, family_weights(pairs), bank=reference_bank(pairs))

    rows = train.select(rng.permutation(len(train))[: args.calibration_prompts])
    motions, captions = [np.asarray(m) for m in rows["motion"]], list(rows["caption"])
    raw = {"ground_truth": score_in_batches(scorer, motions, captions, motions, desc="ground truth")}
    pipeline = TextToMotionPipeline.from_pretrained(args.generator)
    half = len(captions) // 2
    for temperature, part in ((1.0, slice(0, half)), (1.5, slice(half, None))):
        sample = pipeline(captions[part], temperature=temperature, seed=args.seed)
        generated = [f[:n] for f, n in zip(sample.features, sample.lengths.tolist())]
        raw[f"base_t{temperature}"] = score_in_batches(scorer, generated, captions[part], motions[part],
                                                       desc=f"base samples, T={temperature}")  # fmt: skip
    scorer.normalizer = fit_normalizer(list(raw.values()), REWARD_NAMES)
    scorer.save_pretrained(args.out)

    summary = {
        name: {"raw_mean": values.mean(0).tolist(), "normalized_mean": scorer.normalizer(values).mean(0).tolist()}
        for name, values in raw.items()
    }
    record = {"reward_names": list(REWARD_NAMES), "weights": scorer.weights, "normalizer": scorer.normalizer.to_dict(),
              "sets": summary, "bank_size": len(pairs["guo"][0]), "seed": args.seed,
              "wall_time_s": time.time() - start}  # fmt: skip
    (Path(args.out) / "calibration.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
