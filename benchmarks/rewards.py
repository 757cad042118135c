"""Scoring cost against generation cost: can every rollout be scored by all three rewards?

``python benchmarks/rewards.py --num 256 --repeats 3``

Generates ``--num`` motions for distinct test-split captions with the default generator (text
features, KV-cached sampling, VQ-VAE decode), then scores them with the default scorer (both
encoder families, joints→SMPL converter, critic), all timed in this one process, and prints one
table. Scoring is timed twice: with the encoders' per-prompt text caches cold (every caption new,
as in a first PPO iteration) and warm (the prompts seen before, as in later iterations, where
each prompt is sampled under several reward tokens and many times). Target: warm scoring ≤ 25% of
generation. Run it alone: a machine shared with other jobs distorts both timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

TARGET_FRACTION = 0.25


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=256, help="motions to generate and score")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data_dir", default="data/procedural")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from agents.pipeline import TextToMotionPipeline, default_checkpoint_dir
    from motion_env.datasets import load_humanml3d
    from motion_env.features import features_to_joints
    from motion_env.procedural import ensure_dataset
    from reward_models.rewards import RewardScorer

    test = load_humanml3d(ensure_dataset(args.data_dir), "test")
    captions = list(dict.fromkeys(test["caption"]))
    if len(captions) < args.num:
        print(f"error: the test split has {len(captions)} distinct captions, fewer than --num {args.num}", file=sys.stderr)
        return 2
    captions = captions[: args.num]
    pipeline = TextToMotionPipeline.from_pretrained()
    scorer = RewardScorer.from_pretrained(default_checkpoint_dir() / "rewards")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.num} motions", flush=True)

    sample = pipeline(captions, seed=args.seed)  # warm-up; also the motions every scoring pass uses
    generate = statistics.median(_seconds(lambda: pipeline(captions, seed=args.seed)) for _ in range(args.repeats))

    def clear_text_caches():
        for encoder in scorer.encoders.values():
            encoder.clear_text_cache()

    def score():
        scorer(sample.features, sample.lengths, captions)

    cold = []
    for _ in range(args.repeats):
        clear_text_caches()
        cold.append(_seconds(score))
    warm = statistics.median(_seconds(score) for _ in range(args.repeats))
    cold = statistics.median(cold)

    features, lengths = sample.features, sample.lengths
    parts = {}
    with torch.no_grad():
        for family, encoder in scorer.encoders.items():
            parts[f"{family} motion embeddings"] = statistics.median(
                _seconds(lambda e=encoder: e.embed_motions(features, lengths)) for _ in range(args.repeats))  # fmt: skip
        joints = features_to_joints(features)
        parts["joints→SMPL converter"] = statistics.median(
            _seconds(lambda: scorer.converter.convert(joints, lengths)) for _ in range(args.repeats))  # fmt: skip
        rot6d = scorer.converter.convert(joints, lengths)
        parts["perception critic"] = statistics.median(
            _seconds(lambda: scorer.critic.score(rot6d, lengths)) for _ in range(args.repeats))  # fmt: skip

    rows = [("generate (text → codes → features)", generate),
            ("score, text caches cold", cold), ("score, text caches warm", warm),
            *((f"  of which {name}", t) for name, t in parts.items())]  # fmt: skip
    print(f"\n{'section':<40} {'seconds':>8} {'ms/motion':>10} {'÷ generate':>11}")
    for name, seconds in rows:
        print(f"{name:<40} {seconds:8.3f} {1000 * seconds / args.num:10.2f} {seconds / generate:11.3f}")
    verdict = "met" if warm / generate <= TARGET_FRACTION else "NOT met"
    print(f"\nwarm scoring / generation = {warm / generate:.3f} (target ≤ {TARGET_FRACTION}: {verdict}); "
          f"cold = {cold / generate:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
