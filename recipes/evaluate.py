"""Evaluate a text-to-motion generator on a test split with the field's metrics (SPEC §8).

``python recipes/evaluate.py``                          (the default bundle, procedural test split)
``python recipes/evaluate.py --model DIR --out eval.json --repetitions 20``

Prints a Table-1-shaped table (real motion row, one row per model) and writes it as JSON. The
evaluator is the bundle's held-out ``evaluator/`` encoder, never a reward model; the perception
column uses the bundle's critic and joints→SMPL converter.
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
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        help="bundle directory with gpt/ and vqvae/ (repeatable; default: the shipped bundle)",
    )
    parser.add_argument("--name", action="append", default=None, help="row name of each --model (default: its path)")
    parser.add_argument(
        "--reward_token",
        action="append",
        default=None,
        help="guidance of each --model (Eq. 11): 'default' (the model's own: none for a bundle, the recorded mix for "
        "a MotionRL fine-tune), 'none', a token such as '<mt>', tokens joined by '+' (an equal mix), or 'mix' (all "
        "three)",
    )
    parser.add_argument(
        "--evaluator", default=None, help="evaluator encoder directory (default: <default bundle>/evaluator)"
    )
    parser.add_argument("--rewards", default=None, help="reward scorer directory for the critic and converter "
                        "(default: <default bundle>/rewards)")  # fmt: skip
    parser.add_argument("--data_dir", default="data/procedural", help="HumanML3D-layout dataset (generated if missing)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument(
        "--per_motion_repetitions", type=int, default=None,
        help="perception, foot skating and jerk in the first this many repetitions only (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--real_per_motion_repetitions", type=int, default=None,
        help="the same for the real-motion row, which differs between repetitions only by its crops "
             "(default: as --per_motion_repetitions)",
    )  # fmt: skip
    parser.add_argument(
        "--mm_repetitions", type=int, default=5, help="MultiModality repetitions (3000 generations each)"
    )
    parser.add_argument("--batch_size", type=int, default=32, help="R-precision batch (the protocol's 32)")
    parser.add_argument("--diversity_pairs", type=int, default=300)
    parser.add_argument("--mm_num_texts", type=int, default=100)
    parser.add_argument("--mm_num_samples", type=int, default=30)
    parser.add_argument("--mm_num_pairs", type=int, default=10)
    parser.add_argument(
        "--reward_spaces", type=int, default=0, metavar="N",
        help="also measure R-precision and MM-Dist in the reward encoders' own spaces, beside the held-out "
             "evaluator's, in the first N repetitions: a fine-tune that gains far more there than in the evaluator's "
             "space has learned the rewards' quirks (default 0: not measured)",
    )  # fmt: skip
    parser.add_argument(
        "--fid_reference", choices=["full", "crops"], default="full",
        help="FID's real side: 'full', every real test motion at full length (default); 'crops', each repetition's "
             "real crops, as T2M-GPT's evaluation compares, the real row against a second draw of crops",
    )  # fmt: skip
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/evaluation.json", help="where to write the results as JSON")
    return parser.parse_args(argv)


def _guidance(value: str):
    """A ``--reward_token`` value as the pipeline's ``reward_token``."""
    from agents.pipeline import OWN_GUIDANCE
    from agents.text_encoder import REWARD_TOKENS, GuidedTextEncoder

    if value in (OWN_GUIDANCE, "none"):
        return None if value == "none" else OWN_GUIDANCE
    tokens = list(REWARD_TOKENS) if value == "mix" else value.split("+")
    mix = {token: 1.0 for token in tokens}
    GuidedTextEncoder._token_mix(mix)  # names an unknown token
    return tokens[0] if len(tokens) == 1 else mix


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    for flag in (
        "repetitions",
        "mm_repetitions",
        "batch_size",
        "diversity_pairs",
        "mm_num_texts",
        "mm_num_samples",
        "mm_num_pairs",
    ):
        if getattr(args, flag) < 1:
            print(f"error: --{flag} must be >= 1, got {getattr(args, flag)}", file=sys.stderr)
            return 2
    if not 0 <= args.reward_spaces <= args.repetitions:
        print(f"error: --reward_spaces must be in [0, --repetitions={args.repetitions}], got {args.reward_spaces}",
              file=sys.stderr)  # fmt: skip
        return 2
    models = args.model or [None]
    names = args.name or [("MotionGPT (default)" if m is None else str(m)) for m in models]
    if len(names) != len(models):
        print(f"error: {len(names)} --name for {len(models)} --model", file=sys.stderr)
        return 2
    guidance = args.reward_token or ["default"] * len(models)
    if len(guidance) != len(models):
        print(f"error: {len(guidance)} --reward_token for {len(models)} --model", file=sys.stderr)
        return 2
    try:
        guidance = [_guidance(value) for value in guidance]
    except ValueError as err:
        print(f"error: --reward_token: {err}", file=sys.stderr)
        return 2

    from agents.evaluation import (
        EvaluationSettings,
        MotionJudge,
        TestSet,
        check_held_out,
        evaluate,
        reward_space_table,
    )
    from agents.pipeline import OWN_GUIDANCE, TextToMotionPipeline, default_checkpoint_dir
    from motion_env.procedural import ensure_dataset
    from reward_models import load_evaluator
    from reward_models.metrics import evaluation_table, paired_difference
    from reward_models.rewards import RewardScorer

    start = time.time()
    data = ensure_dataset(args.data_dir)
    bundle = default_checkpoint_dir()
    evaluator = load_evaluator(args.evaluator or bundle / "evaluator")
    scorer = RewardScorer.from_pretrained(args.rewards or bundle / "rewards")
    try:
        check_held_out(evaluator, scorer)
    except ValueError as err:
        print(f"error: --evaluator {args.evaluator or bundle / 'evaluator'}: {err}", file=sys.stderr)
        return 2
    judge = MotionJudge(evaluator, scorer.converter, scorer.critic)
    generators = {}
    for name, model, reward_token in zip(names, models, guidance):
        generators[name] = TextToMotionPipeline.from_pretrained(model)
        if reward_token != OWN_GUIDANCE:
            generators[name].reward_token = reward_token
    settings = EvaluationSettings(repetitions=args.repetitions, per_motion_repetitions=args.per_motion_repetitions,
                                  real_per_motion_repetitions=args.real_per_motion_repetitions,
                                  mm_repetitions=args.mm_repetitions,
                                  mm_num_texts=args.mm_num_texts, mm_num_samples=args.mm_num_samples,
                                  mm_num_pairs=args.mm_num_pairs,
                                  diversity_pairs=args.diversity_pairs, batch_size=args.batch_size,
                                  temperature=args.temperature, seed=args.seed,
                                  reward_space_repetitions=args.reward_spaces,
                                  fid_reference=args.fid_reference)  # fmt: skip
    result = evaluate(generators, judge, TestSet(data, args.split), settings, reward_encoders=scorer.encoders)
    result.update({"data_dir": str(data), "split": args.split, "wall_time_s": time.time() - start,
                   "models": dict(zip(names, [str(m or bundle) for m in models])),
                   "guidance": {name: pipe.reward_token for name, pipe in generators.items()}})  # fmt: skip
    print(evaluation_table(result["rows"]))
    if len(names) > 1 and args.repetitions > 1:
        print(f"\npaired differences from {names[0]!r} (mean ±95% half-interval over {args.repetitions} repetitions):")
        first = result["repetitions"][names[0]]
        for name in names[1:]:
            cells = []
            for metric in ("top1", "fid", "perception"):
                mean, half = paired_difference(first[metric], result["repetitions"][name][metric])
                cells.append(f"{metric} {mean:+.4f} ±{half:.4f}")
            print(f"  {name}: " + ", ".join(cells))
    if "reward_spaces" in result:
        print(f"\ntop-1 R-precision in each encoder's space (first {args.reward_spaces} repetitions, the same batches "
              "in every column):")  # fmt: skip
        print(reward_space_table(result["reward_spaces"], baseline=names[0] if len(names) > 1 else None))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
