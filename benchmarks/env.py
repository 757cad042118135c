"""What the Gymnasium env costs around the policy: 64 envs × full episodes with a random policy.

``python benchmarks/env.py --num-envs 64 --episodes 2``

Times, in one process: the vector env's own work per step (appending tokens, observations,
autoreset, infos), the prompts' text features at resets (MiniLM; cached per prompt, so they fade
in long runs), the decode + score at episode ends (VQ-VAE decoder and the three rewards, in
one batch per step), and one KV-cached policy step at the same batch (the default MotionGPT,
the per-token cost of sampling). Target: env overhead per step ≤ 10% of a policy step. A random
policy emits END rarely, so most episodes run to the 49-code limit and are truncated (and scored).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=2, help="episodes per env")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from agents.pipeline import TextToMotionPipeline
    from motion_env.emission import default_parts, default_prompts
    from motion_env.vector_env import TextToMotionVectorEnv

    parts = default_parts()
    env = TextToMotionVectorEnv(args.num_envs, default_prompts(), parts=parts)
    scoring = [0.0]
    score = env.batch.score

    def timed_score(rows):
        start = time.perf_counter()
        out = score(rows)
        scoring[0] += time.perf_counter() - start
        return out

    env.batch.score = timed_score
    texts = [0.0]
    features = parts[0].features

    def timed_features(*a, **k):
        start = time.perf_counter()
        out = features(*a, **k)
        texts[0] += time.perf_counter() - start
        return out

    parts[0].features = timed_features
    rng = np.random.default_rng(args.seed)
    end = env.single_action_space.n - 1
    env.reset(seed=args.seed)
    env.step(rng.integers(0, end + 1, args.num_envs))  # warm-up step (first text features, allocations)
    env.reset(seed=args.seed)
    scoring[0], texts[0], steps, finished = 0.0, 0.0, 0, 0
    start = time.perf_counter()
    while finished < args.episodes * args.num_envs:
        _, _, terminated, truncated, _ = env.step(rng.integers(0, end + 1, args.num_envs))
        finished += int((terminated | truncated).sum())
        steps += 1
    total = time.perf_counter() - start
    env_only = total - scoring[0] - texts[0]

    pipeline = TextToMotionPipeline.from_pretrained()
    features = pipeline.text_encoder.features(["a person walks forward"] * args.num_envs)
    generate = pipeline.policy.generate
    with torch.inference_mode():
        generate(features, max_codes=49, min_codes=49)  # warm-up
        start = time.perf_counter()
        generate(features, max_codes=49, min_codes=49)
        policy_step = (time.perf_counter() - start) / 49

    rows = [("vector env step, env code only", env_only / steps),
            ("prompt text features (MiniLM, cached)", texts[0] / steps),
            ("decode + score (per step, amortised)", scoring[0] / steps),
            ("policy step, KV-cached MotionGPT", policy_step)]  # fmt: skip
    print(f"\n{args.num_envs} envs, {finished} episodes, {steps} steps, torch {torch.get_num_threads()} threads")
    print(f"{'section':<40} {'ms/step':>9} {'÷ policy step':>14}")
    for name, seconds in rows:
        print(f"{name:<40} {1000 * seconds:9.2f} {seconds / policy_step:14.3f}")
    ratio = env_only / steps / policy_step
    print(f"\nenv overhead / policy step = {ratio:.3f} (target ≤ 0.10: {'met' if ratio <= 0.10 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
