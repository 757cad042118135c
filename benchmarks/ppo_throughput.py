"""Episodes per second of one PPO iteration: a 4 × 256 MotionGPT policy at batch 64 × 50 tokens.

``python benchmarks/ppo_throughput.py --iterations 5``

One iteration is what `MotionPPOTrainer` does per rollout: text features, KV-cached sampling of
64 episodes (16 prompts × '<mt>' × 4 samples) of exactly 50 actions each (``min_codes`` 49 of
``max_codes`` 50: 49 or 50 codes, then END unless cut, so every row has 50 actions and the
teacher-forced passes read 50 positions), the value head on the sampler's hidden states (which,
with its log-probabilities, stand in for TRL's old-logprob and value forward), the reference pass,
VQ-VAE decoding, scoring with the default `RewardScorer`, GAE, then 2 PPO epochs × 2 minibatches
of 32 (forward, backward, gradient clipping, AdamW). It runs in ``trainer.train()`` itself: one
warm-up iteration, then ``--iterations`` timed ones, wall time taken at the rollout boundaries
by a callback, so the Trainer loop's own overhead counts. The phases are timed by wrapping the
trainer's parts (the scorer by a callable that times its own calls); "update" is the iteration
minus its rollout. eps/s without scoring leaves out only the scorer's calls (decoding stays in).

The baseline, TRL's PPOTrainer at these sizes with policy, value, reference and reward models all
4 × 256 Llamas, is measured in the same run: `trl_ppo_baseline.py` in a subprocess against TRL
1.12, the last release with a PPOTrainer, which this script installs into ``--trl_dir`` (``pip
install --no-deps --target``; nothing else on the machine changes) when it is not there yet.
``--trl quoted`` skips it and compares with the 13.7 episodes/s the issue quotes for this machine.
TRL's figure includes its reward model's forward, so the table gives the ratio with and without
it; ours leaves out scoring. Run it alone: a machine shared with other jobs distorts the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

QUOTED_TRL_EPISODES_PER_SECOND = 13.7  # the figure for TRL 1.12 on a 2-core machine
TARGET_RATIO = 1.5
TRL_WITH_PPO = "1.12.0"  # the last TRL release with a PPOTrainer
MAX_CODES, MIN_CODES = 50, 49  # 50 actions per episode, END never before code 49


class Stopwatch:
    """Seconds spent per named phase, accumulated over calls; `reset` starts a new window."""

    def __init__(self, synchronize):
        self.synchronize = synchronize
        self.seconds: dict[str, float] = defaultdict(float)

    def reset(self) -> None:
        self.seconds.clear()

    def wrap(self, fn, phase: str):
        def timed(*args, **kwargs):
            self.synchronize()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.synchronize()
            self.seconds[phase] += time.perf_counter() - start
            return out

        return timed


class TimedScorer:
    """The scorer, timing its own calls into ``stopwatch.seconds['scoring']``."""

    def __init__(self, scorer, stopwatch: Stopwatch):
        self.scorer = scorer
        self._call = stopwatch.wrap(scorer, "scoring")

    def __call__(self, features, lengths, prompts, ground_truth=None):
        return self._call(features, lengths, prompts, ground_truth)


def time_rollout_values(model, stopwatch: Stopwatch) -> None:
    """Time the rollout's value estimates: the value head on the sampler's states (eval mode only; in
    the update they are part of the training forward)."""
    values = model.values

    def timed_values(*args, **kwargs):
        if model.training:
            return values(*args, **kwargs)
        stopwatch.synchronize()
        start = time.perf_counter()
        out = values(*args, **kwargs)
        stopwatch.synchronize()
        stopwatch.seconds["old_value"] += time.perf_counter() - start
        return out

    model.values = timed_values


def forward_flops(config, positions: int) -> float:
    """FLOPs of one teacher-forced forward of a row over ``positions`` states [text, codes...].

    Counted, 2 per multiply-add: the text projection, each layer's q/k/v/o and MLP products, causal
    attention's scores and weighted sums (position i attends to i + 1), the LM head. Norms,
    activations, softmax and the value head (one dot product per state) are left out.
    """
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    linear = positions * (layers * (4 * d * d + 2 * d * ff) + d * config.vocab_size) + config.text_dim * d
    attention = layers * 2 * d * positions * (positions + 1) // 2
    return 2.0 * (linear + attention)


def matmul_rate(device: str, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large fp32 matrix product on ``device`` with the current threads: the ceiling for
    the policy's passes."""
    import torch

    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    synchronize = torch.cuda.synchronize if device == "cuda" else lambda: None
    a @ b
    synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        synchronize()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def build_trainer(args, workdir: str, stopwatch: Stopwatch, boundaries: list[float]):
    import torch
    from transformers import PrinterCallback, TrainerCallback

    from agents.motion_gpt import MotionGPTConfig, MotionGPTForCausalLM
    from agents.ppo import MotionPPOConfig, MotionPPOTrainer
    from motion_env.datasets import load_humanml3d
    from motion_env.emission import PromptSet, default_parts
    from motion_env.procedural import ensure_dataset

    device = "cuda" if torch.cuda.is_available() else "cpu"
    text_encoder, vqvae, scorer = default_parts(device=device)
    prompts = PromptSet(load_humanml3d(ensure_dataset(args.data_dir), "train"))  # holds every ground-truth motion
    torch.manual_seed(args.seed)
    config = MotionGPTConfig(codebook_size=vqvae.config.codebook_size, text_dim=text_encoder.dim, hidden_size=256,
                             num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                             max_codes=MAX_CODES)  # fmt: skip
    policy = MotionGPTForCausalLM(config)
    ppo_args = MotionPPOConfig(
        output_dir=workdir, num_prompts_per_rollout=16, reward_tokens=["<mt>"], num_samples_per_token=4,
        per_device_train_batch_size=32, num_ppo_epochs=2, min_codes=MIN_CODES, critic=args.critic,
        max_steps=0, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=args.seed,
    )  # fmt: skip
    steps = ppo_args.steps_per_rollout
    ppo_args.max_steps, ppo_args.logging_steps = steps * (1 + args.iterations), steps  # warm-up + timed

    class RolloutBoundaries(TrainerCallback):
        """Wall clock at the end of every rollout's last step; the phase totals restart after the warm-up."""

        def on_step_end(self, _args, state, control, **kwargs):
            if state.global_step % steps == 0:
                stopwatch.synchronize()
                boundaries.append(time.perf_counter())
                if len(boundaries) == 1:
                    stopwatch.reset()

    trainer = MotionPPOTrainer(policy, ppo_args, prompts, text_encoder, vqvae, TimedScorer(scorer, stopwatch),
                               callbacks=[RolloutBoundaries()])  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # the logs still happen (their cost counts), unprinted
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.generate = stopwatch.wrap(model.generate, "sampling")
    trainer.text_encoder.features = stopwatch.wrap(trainer.text_encoder.features, "text_features")
    trainer.vqvae.decode_motion = stopwatch.wrap(trainer.vqvae.decode_motion, "decode")
    trainer._ref_logprobs = stopwatch.wrap(trainer._ref_logprobs, "reference")
    trainer.rollout = stopwatch.wrap(trainer.rollout, "rollout")
    time_rollout_values(model, stopwatch)
    return trainer, device


def measure_trl(trl_dir: str, iterations: int, seed: int) -> dict:
    """Run `trl_ppo_baseline.py` against TRL 1.12 in ``trl_dir`` (installed there first if missing)."""
    if not os.path.isdir(os.path.join(trl_dir, "trl", "experimental", "ppo")):
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", trl_dir,
                   f"trl=={TRL_WITH_PPO}"]  # fmt: skip
        print(f"installing the baseline: {' '.join(command[2:])}", flush=True)
        if subprocess.run(command).returncode != 0:
            raise SystemExit(f"could not install trl=={TRL_WITH_PPO} into {trl_dir} (the package index is needed "
                             "once); install it there yourself, or run with --trl quoted")  # fmt: skip
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trl_ppo_baseline.py")
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [trl_dir, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, script, "--iterations", str(iterations), "--seed", str(seed)],
                          env=env, capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the TRL baseline failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=5, help="timed PPO iterations, after one warm-up")
    parser.add_argument(
        "--critic",
        choices=["head", "separate"],
        default="head",
        help="value head on the policy (default) or its own transformer, as TRL's value model",
    )
    parser.add_argument("--data_dir", default="data/procedural", help="prompts: the train split of this dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--trl",
        choices=["measure", "quoted"],
        default="measure",
        help="measure TRL 1.12's PPOTrainer in this run (default) or use the issue's quoted 13.7 episodes/s",
    )
    parser.add_argument("--trl_dir", default=".cache/trl-1.12.0", help="where TRL 1.12 is (or gets) installed")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error(f"--iterations must be >= 1, got {args.iterations}")

    import torch

    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else lambda: None
    peak = matmul_rate("cuda" if torch.cuda.is_available() else "cpu")  # before the trainer holds any memory
    stopwatch, boundaries = Stopwatch(synchronize), []
    with tempfile.TemporaryDirectory() as workdir:
        trainer, device = build_trainer(args, workdir, stopwatch, boundaries)
        trainer.train()
    rollout = trainer._rollout
    actions = rollout.action_mask.sum(-1)
    if not (actions == MAX_CODES).all():
        raise RuntimeError(f"expected {MAX_CODES} actions in every episode, got {actions.unique().tolist()}")

    n, episodes = args.iterations, trainer.args.rollout_size
    total = (boundaries[-1] - boundaries[0]) / n  # s per iteration
    phase = {key: value / n for key, value in stopwatch.seconds.items()}
    named = ("text_features", "sampling", "old_value", "reference", "decode", "scoring")
    rows = [
        ("text features (sentence encoder, reward-token mix)", phase["text_features"]),
        (f"sampling: KV-cached generate, {episodes} × {MAX_CODES} tokens", phase["sampling"]),
        ("old log-probs (from the sampler) + value head", phase["old_value"]),
        ("reference forward (frozen copy)", phase["reference"]),
        ("VQ-VAE decode", phase["decode"]),
        ("scoring: default RewardScorer", phase["scoring"]),
        ("rest of the rollout (log-probs, KL, GAE, metrics)", phase["rollout"] - sum(phase[k] for k in named)),
        (f"update: {trainer.args.steps_per_rollout} minibatches of {trainer.args.per_device_train_batch_size} "
         "(fwd, bwd, clip, AdamW) + Trainer loop", total - phase["rollout"]),
    ]  # fmt: skip
    without_scoring = episodes / (total - phase["scoring"])
    with_scoring = episodes / total
    trl = measure_trl(args.trl_dir, args.iterations, args.seed) if args.trl == "measure" else None
    baseline = trl["episodes_per_second"] if trl else QUOTED_TRL_EPISODES_PER_SECOND
    ratio = without_scoring / baseline

    threads = f"{torch.get_num_threads()} threads" if device == "cpu" else torch.cuda.get_device_name()
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {device} ({threads}), load average "
          f"{os.getloadavg()[0]:.2f} after the run; policy 4 × 256 (K = {trainer.vqvae.config.codebook_size}), "
          f"critic '{args.critic}'; {episodes} episodes × {MAX_CODES} actions per iteration, "
          f"{trainer.args.num_ppo_epochs} PPO epochs × {episodes // trainer.args.per_device_train_batch_size} "
          f"minibatches; mean of {n} iterations after 1 warm-up\n")  # fmt: skip
    print("| quantity | s per iteration | share | episodes/s | notes |")
    print("|---|---:|---:|---:|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {seconds / total:.1%} | | |")
    print(f"| iteration with scoring | {total:.3f} | 100% | {with_scoring:.1f} | |")
    print(f"| iteration without scoring | {total - phase['scoring']:.3f} | | {without_scoring:.1f} | |")
    if trl:
        t = trl["phases"]
        print(f"| TRL {trl['trl_version']} PPOTrainer, 4 × 256 Llamas (MLP {trl['intermediate_size']}), measured "
              f"in this run | {trl['seconds_per_iteration']:.3f} | | {baseline:.1f} | generate "
              f"{t['generation']:.2f} s, reference {t['reference']:.2f} s, value model {t['value']:.2f} s, reward "
              f"model {t['reward model']:.2f} s, update forwards {t['update forward']:.2f} s |")  # fmt: skip
        print(f"| TRL without its reward model's forward | "
              f"{trl['seconds_per_iteration'] - t['reward model']:.3f} | | "
              f"{trl['episodes_per_second_without_reward_model']:.1f} | |")  # fmt: skip
    print(f"| TRL 1.12 as quoted in the issue (not measured here) | {episodes / QUOTED_TRL_EPISODES_PER_SECOND:.3f} | | "
          f"{QUOTED_TRL_EPISODES_PER_SECOND:.1f} | includes its reward model |")  # fmt: skip
    if trl:
        strict = without_scoring / trl["episodes_per_second_without_reward_model"]
        print(f"| ratio: ours without scoring / TRL measured | | | {ratio:.2f}x | target >= {TARGET_RATIO}x: "
              f"{'met' if ratio >= TARGET_RATIO else 'not met'} |")  # fmt: skip
        print(f"| ratio: ours without scoring / TRL measured without its reward model | | | {strict:.2f}x | "
              f"{'met' if strict >= TARGET_RATIO else 'not met'} |")  # fmt: skip
    quoted = without_scoring / QUOTED_TRL_EPISODES_PER_SECOND
    print(f"| ratio: ours without scoring / quoted TRL | | | {quoted:.2f}x | "
          f"{'met' if quoted >= TARGET_RATIO else 'not met'} |")  # fmt: skip

    # How far compute allows: the policy's passes at this device's large-matrix-product rate.
    config = trainer.accelerator.unwrap_model(trainer.model).config
    row = forward_flops(config, MAX_CODES)  # 50 states per episode: [text, codes[:49]]
    update_flops = trainer.args.num_ppo_epochs * episodes * 3 * row  # backward ≈ 2 forwards
    passes = {"sampling": episodes * row, "reference": episodes * row, "update": update_flops}
    seconds = {"sampling": phase["sampling"], "reference": phase["reference"], "update": total - phase["rollout"]}
    policy_flops = sum(passes.values())
    other = total - phase["scoring"] - sum(seconds.values())  # text features, decoding, GAE, ...: as measured
    bound = policy_flops / peak + other
    print(f"\n| compute | GFLOP per iteration | s per iteration | GFLOP/s | share of the {peak / 1e9:.0f} GFLOP/s "
          "of a 2048³ fp32 matrix product here |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for name, flops in passes.items():
        rate = flops / seconds[name]
        print(f"| {name} (counted: linear layers, attention, LM head) | {flops / 1e9:.1f} | {seconds[name]:.3f} | "
              f"{rate / 1e9:.1f} | {rate / peak:.0%} |")  # fmt: skip
    print(f"| all policy passes at the matrix-product rate, the rest ({other:.3f} s) as measured | "
          f"{policy_flops / 1e9:.1f} | {bound:.3f} | | {episodes / bound:.1f} episodes/s, "
          f"{episodes / bound / baseline:.2f}x the {'measured' if trl else 'quoted'} TRL figure |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
