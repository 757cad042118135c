"""Peak memory of a PPO run: full fine-tuning against LoRA, same policy and rollouts.

``python benchmarks/ppo_memory.py --hidden 512 --layers 8 --steps 8``

Each mode runs in its own fresh process of this script (``--run``), so that neither peak holds
the other's memory: load the shared parts (text encoder, VQ-VAE, default scorer, prompts), build
the seeded policy, note the memory, build `MotionPPOTrainer` (full: a frozen copy of the policy
as reference; LoRA: ``peft.LoraConfig(r=8, lora_alpha=16)`` on the attention and MLP projections,
the adapter-disabled network as reference, no copy) and train ``--steps`` minibatch steps with
the rollout settings of ``benchmarks/ppo_throughput.py`` (64 episodes × 50 actions, minibatches of
32). A rollout is 4 steps; the default 8 are two, so that the second rollout's sampling, decoding
and scoring run while the AdamW state of the first update is held.

On CUDA the peak is ``torch.cuda.max_memory_allocated``, reset before the trainer is built. On CPU
it is the process's peak RSS (``ru_maxrss``), its high-water mark restarted before the trainer is
built through Linux's ``/proc/self/clear_refs`` (loading the prompt set peaks higher than PPO on a
small policy; a note says when the restart failed). For both, the increase over the level just
before the trainer (shared parts, the `PromptSet` with its ground-truth motions and the policy's
weights loaded); it also holds what the text encoder and the scorer allocate on their first
calls, the same in both modes. Weights, gradients and optimizer state are counted exactly from
the tensors after the run.

The children run with glibc's mmap threshold fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``;
``--malloc_defaults`` leaves glibc's sliding threshold): with the sliding one, freed blocks of up
to 32 MiB stay in the heap, the RSS follows the allocation history rather than the live tensors,
and in one run here LoRA's peak came out 108 MiB above full fine-tuning's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile

MODES = ("full", "lora")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
MAX_CODES, MIN_CODES = 50, 49
MIB = 2**20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _restart_peak_rss() -> bool:
    """Restart the kernel's RSS high-water mark (and so ``ru_maxrss``) at the current RSS; False if it did not.

    Loading the prompt set's ground-truth motions peaks higher than a PPO step of a small policy,
    so without this the trainer's peak would not show in ``ru_maxrss``.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # Linux >= 4.0: reset the peak RSS
    except OSError:
        return False
    return _peak_rss_bytes() <= _rss_bytes() + 16 * MIB


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure(args) -> dict:
    """Build and train one mode in this process; its memory figures in bytes."""
    import torch
    from peft import LoraConfig
    from transformers import PrinterCallback

    from agents.motion_gpt import MotionGPTConfig, MotionGPTForCausalLM
    from agents.ppo import MotionPPOConfig, MotionPPOTrainer
    from motion_env.datasets import load_humanml3d
    from motion_env.emission import PromptSet, default_parts
    from motion_env.procedural import ensure_dataset

    cuda = torch.cuda.is_available()
    text_encoder, vqvae, scorer = default_parts(device="cuda" if cuda else "cpu")
    prompts = PromptSet(load_humanml3d(ensure_dataset(args.data_dir), "train"))  # holds every ground-truth motion
    torch.manual_seed(args.seed)
    config = MotionGPTConfig(codebook_size=vqvae.config.codebook_size, text_dim=text_encoder.dim,
                             hidden_size=args.hidden, num_hidden_layers=args.layers,
                             num_attention_heads=max(1, args.hidden // 64), intermediate_size=4 * args.hidden,
                             max_codes=MAX_CODES)  # fmt: skip
    policy = MotionGPTForCausalLM(config)
    peft_config = LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS) if args.run == "lora" else None

    gc.collect()
    if cuda:
        policy.cuda()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before, peak_before, restarted = torch.cuda.memory_allocated(), torch.cuda.memory_allocated(), True
    else:
        restarted = _restart_peak_rss()
        before, peak_before = _rss_bytes(), _peak_rss_bytes()
    with tempfile.TemporaryDirectory() as workdir:
        ppo_args = MotionPPOConfig(
            output_dir=workdir, num_prompts_per_rollout=16, reward_tokens=["<mt>"], num_samples_per_token=4,
            per_device_train_batch_size=32, num_ppo_epochs=2, min_codes=MIN_CODES, max_steps=args.steps,
            save_strategy="no", report_to="none", disable_tqdm=True, seed=args.seed,
        )  # fmt: skip
        trainer = MotionPPOTrainer(policy, ppo_args, prompts, text_encoder, vqvae, scorer, peft_config=peft_config)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _peak_rss_bytes()

    model = trainer.accelerator.unwrap_model(trainer.model)
    params = list({id(p): p for p in model.parameters()}.values())
    trainable = [p for p in params if p.requires_grad]
    reference = list(trainer.ref_model.parameters()) if trainer.ref_model is not None else []
    state = trainer.optimizer.state
    optimizer = [t for s in state.values() for t in s.values() if torch.is_tensor(t)]
    return {
        "device": "cuda" if cuda else "cpu",
        "params": sum(p.numel() for p in params) + sum(p.numel() for p in reference),
        "trainable": sum(p.numel() for p in trainable),
        "weights": _nbytes(params) + _nbytes(reference),
        "reference_copy": _nbytes(reference),
        "grads": _nbytes(trainable),
        "optimizer": _nbytes(optimizer),
        "before": before,
        "peak_before": peak_before,
        "peak": peak,
        "peak_restarted": restarted,
        "steps": trainer.state.global_step,
    }


def run_in_fresh_process(mode: str, args) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--run", mode, "--hidden", str(args.hidden),
               "--layers", str(args.layers), "--steps", str(args.steps), "--data_dir", args.data_dir,
               "--seed", str(args.seed)]  # fmt: skip
    env = dict(os.environ) if args.malloc_defaults else {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the {mode} run failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512, help="policy width (heads of 64, MLP 4x wide)")
    parser.add_argument("--layers", type=int, default=8, help="policy depth")
    parser.add_argument("--steps", type=int, default=8, help="PPO minibatch steps (4 per rollout)")
    parser.add_argument("--data_dir", default="data/procedural", help="prompts: the train split of this dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--malloc_defaults",
        action="store_true",
        help="keep glibc's sliding mmap threshold in the children (RSS then lags freed memory)",
    )
    parser.add_argument("--run", choices=MODES, help=argparse.SUPPRESS)  # internal: one mode in this process
    args = parser.parse_args(argv)
    if args.run:
        print(json.dumps(measure(args)))
        return 0

    results = {mode: run_in_fresh_process(mode, args) for mode in MODES}
    full, lora = results["full"], results["lora"]
    device = full["device"]
    peak_name = "peak allocated (torch.cuda)" if device == "cuda" else "peak RSS (ru_maxrss)"
    print(f"policy {args.layers} layers × {args.hidden} wide, {full['steps']} PPO steps of 32 (64 episodes × "
          f"{MAX_CODES} actions per rollout), {device}, each mode in a fresh process ("
          f"{'glibc malloc defaults' if args.malloc_defaults else 'glibc mmap threshold 128 KiB'}); MiB = 2^20 bytes. "
          f"'increase' is the peak minus the level just before the trainer was built (shared parts, the "
          f"prompt set and the policy's weights loaded); weights, grads and optimizer state are counted "
          f"from the tensors\n")  # fmt: skip

    columns = [
        ("trainable params", lambda r: r["trainable"], "{:,.0f}"),
        ("all params (incl. reference copy)", lambda r: r["params"], "{:,.0f}"),
        ("weights MiB", lambda r: r["weights"] / MIB, "{:,.1f}"),
        ("of which reference copy MiB", lambda r: r["reference_copy"] / MIB, "{:,.1f}"),
        ("grads MiB", lambda r: r["grads"] / MIB, "{:,.1f}"),
        ("AdamW state MiB", lambda r: r["optimizer"] / MIB, "{:,.1f}"),
        ("weights + grads + AdamW MiB", lambda r: (r["weights"] + r["grads"] + r["optimizer"]) / MIB, "{:,.1f}"),
        (f"{peak_name} MiB", lambda r: r["peak"] / MIB, "{:,.1f}"),
        ("level before trainer MiB", lambda r: r["before"] / MIB, "{:,.1f}"),
        ("peak increase MiB", lambda r: (r["peak"] - r["before"]) / MIB, "{:,.1f}"),
    ]
    print("| quantity | full fine-tuning | LoRA (r=8) | ratio LoRA/full |")
    print("|---|---:|---:|---:|")
    for name, value, fmt in columns:
        a, b = value(full), value(lora)
        ratio = f"{b / a:.3f}" if a else "-"
        print(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {ratio} |")
    for mode, r in results.items():
        if not r["peak_restarted"] or r["peak"] <= r["peak_before"]:
            print(
                f"\nnote: in the {mode} run the peak RSS could not be restarted before the trainer and was "
                f"{r['peak_before'] / MIB:,.1f} MiB then: its peak and increase may not be the trainer's"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
