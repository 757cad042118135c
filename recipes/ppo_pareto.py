"""Main job: Pareto-filtered multi-reward PPO fine-tuning of a text-to-motion generator (MotionRL).

``accelerate launch recipes/ppo_pareto.py``

With no argument it fine-tunes the shipped default bundle (``checkpoints/default``) on prompts of
the procedural training split with the settings of ``recipes/configs/ppo_pareto.yaml`` (sized for
a laptop CPU), then evaluates base and fine-tuned model on the test split with the held-out
evaluator and writes to ``--output_dir`` (default ``outputs/ppo_pareto``):

- ``gpt/`` (or ``adapter/`` with ``--use_peft``), ``value.safetensors``, ``bundle.json``: the
  fine-tuned model, loadable with ``TextToMotionPipeline.from_pretrained(output_dir)``;
- ``runs/``: TensorBoard logs of the PPO metrics;
- ``report.md`` / ``report.json``: before/after table, reward vectors and hypervolumes,
  ``pareto_front.png`` and ``gifs/``.

Any field of ``MotionPPOConfig`` (``transformers.TrainingArguments`` included) and TRL's
``ModelConfig`` (``--use_peft``, ``--lora_r``, ...) is a flag or a key of a ``--config`` YAML;
flags override the file. Other configs: ``recipes/configs/`` (baselines of the ablations).

    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/ppo_pareto.py \\
        --config my_run.yaml --model_dir bundles/humanml3d --humanml3d_dir data/HumanML3D
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "ppo_pareto.yaml"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


@dataclass
class ScriptArguments:
    model_dir: str | None = field(
        default=None, metadata={"help": "Bundle with gpt/, vqvae/, rewards/, evaluator/ (default: the shipped one)."}
    )
    data_dir: str = field(
        default="data/procedural", metadata={"help": "Procedural dataset (generated there when missing)."}
    )
    humanml3d_dir: str | None = field(
        default=None, metadata={"help": "A HumanML3D directory: prompts from its train split, evaluation on its test."}
    )
    selection: str = field(
        default="pareto", metadata={"help": "'pareto' (MotionRL) or 'all' (plain PPO, the ablations' baseline)."}
    )
    report: bool = field(default=True, metadata={"help": "Evaluate base and fine-tuned model and write the report."})
    eval_repetitions: int = field(default=5, metadata={"help": "Evaluation repetitions in the report."})
    eval_per_motion_repetitions: int | None = field(
        default=None,
        metadata={"help": "Perception, foot skating and jerk in the first this many repetitions only (default: all)."},
    )
    eval_real_per_motion_repetitions: int | None = field(
        default=None,
        metadata={"help": "The same for the real-motion row, which differs between repetitions only by its crops "
                  "(default: as --eval_per_motion_repetitions)."},
    )  # fmt: skip
    eval_max_motions: int | None = field(default=None, metadata={"help": "Evaluate on at most this many test motions."})
    eval_fid_reference: str = field(
        default="full",
        metadata={"help": "FID's real side in the report: 'full', every real test motion at full length; 'crops', "
                  "each repetition's real crops (T2M-GPT's evaluation)."},
    )  # fmt: skip
    eval_reward_spaces: int = field(
        default=0,
        metadata={"help": "Also measure top-1 R-precision in the reward encoders' own spaces, beside the held-out "
                  "evaluator's, in the first this many repetitions (0: not measured)."},
    )  # fmt: skip
    eval_batch_size: int = field(
        default=32, metadata={"help": "R-precision batch of the evaluation (the protocol's 32)."}
    )
    reward_prompts: int = field(default=64, metadata={"help": "Test prompts whose reward vectors the report plots."})
    num_gifs: int = field(default=4, metadata={"help": "Prompts rendered before/after as GIFs."})
    cpu_threads: int | None = field(
        default=None,
        metadata={"help": "Torch threads of a single process on a CPU (default: every physical core; `accelerate "
                  "launch` alone would leave it 1)."},
    )  # fmt: skip
    guidance: str = field(
        default="mix",
        metadata={"help": "How the fine-tuned model samples by default (recorded in bundle.json, used by the report): "
                  "'mix', an equal mix of the reward tokens it was trained with (Eq. 11), or 'none'."},
    )  # fmt: skip


def _use_the_cores(threads: int | None) -> None:
    """A lone CPU process gets every physical core: `accelerate launch` exports OMP_NUM_THREADS=1 unless told
    otherwise, which leaves a laptop's other cores idle."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or torch.cuda.is_available():
        return
    if threads is None:
        import psutil

        threads = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    torch.set_num_threads(threads)


def _use_cpu_for_process_groups() -> None:
    """Several processes on a machine without a GPU run on the CPU with gloo (accelerate needs to be told).

    A DeepSpeed or FSDP launch config there stops with an error: on the CPU the processes would run as
    plain data parallelism, not sharded as the config asks.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        if torch.cuda.is_available():
            return
        for variable, name in (("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"), ("ACCELERATE_USE_FSDP", "FSDP")):
            if os.environ.get(variable, "false").lower() == "true":
                raise SystemExit(
                    f"the accelerate config asks for {name} over {os.environ['WORLD_SIZE']} processes, but this "
                    "machine has no GPU; launch with --config_file accelerate_configs/cpu.yaml (data parallel "
                    "over gloo) on a CPU, or run the config on GPUs"
                )
        os.environ["ACCELERATE_USE_CPU"] = "true"  # the launcher may have set it to false


# the flag of each ReportSettings field (the seed is the training's)
REPORT_FLAGS = {"repetitions": "--eval_repetitions", "per_motion_repetitions": "--eval_per_motion_repetitions",
                "real_per_motion_repetitions": "--eval_real_per_motion_repetitions",
                "reward_prompts": "--reward_prompts", "num_gifs": "--num_gifs", "max_motions": "--eval_max_motions",
                "reward_space_repetitions": "--eval_reward_spaces", "batch_size": "--eval_batch_size",
                "fid_reference": "--eval_fid_reference"}  # fmt: skip


def report_settings(script: ScriptArguments, args):
    """The report's `ReportSettings` from the flags (a ValueError names a bad one)."""
    from agents.ppo_report import ReportSettings

    return ReportSettings(seed=args.seed, **{name: getattr(script, flag[2:]) for name, flag in REPORT_FLAGS.items()})


def parse(argv: list[str] | None):
    from trl import ModelConfig, TrlParser

    from agents.ppo import MotionPPOConfig

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:
        argv = ["--config", str(DEFAULT_CONFIG), *argv]
    parser = TrlParser((ScriptArguments, MotionPPOConfig, ModelConfig))
    script, args, model_args = parser.parse_args_and_config(args=argv)
    if script.selection not in ("pareto", "all"):
        parser.error(f"--selection must be 'pareto' or 'all', got {script.selection!r}")
    if script.cpu_threads is not None and script.cpu_threads < 1:
        parser.error(f"--cpu_threads must be >= 1, got {script.cpu_threads}")
    if script.guidance not in ("mix", "none"):
        parser.error(f"--guidance must be 'mix' or 'none', got {script.guidance!r}")
    if script.report:  # checked before training, not after it
        try:
            report_settings(script, args)
        except ValueError as err:
            message = str(err)
            for name, flag in sorted(REPORT_FLAGS.items(), key=lambda item: -len(item[0])):  # longest names first
                message = message.replace(f"ReportSettings.{name}", flag)
            parser.error(message)
    return script, args, model_args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _use_cpu_for_process_groups()
    script, args, model_args = parse(argv)
    _use_the_cores(script.cpu_threads)
    start = time.time()

    import torch
    from accelerate import PartialState
    from trl import get_peft_config

    from agents.pipeline import BUNDLE_RECORD, TextToMotionPipeline, default_checkpoint_dir, load_policy
    from agents.ppo import NO_TOKEN, MotionPPOTrainer, ParetoPPOTrainer, base_policy
    from motion_env.datasets import load_humanml3d
    from motion_env.emission import default_parts
    from motion_env.procedural import ensure_dataset

    bundle = Path(script.model_dir) if script.model_dir else default_checkpoint_dir()
    for part in ("gpt", "vqvae", "rewards"):
        if not (bundle / part).is_dir():
            raise FileNotFoundError(
                f"--model_dir {bundle}: missing {part}/; give a bundle directory with gpt/, vqvae/, rewards/ and "
                "evaluator/ (the shipped one is checkpoints/default; `python recipes/build_default.py` rebuilds it)"
            )
    state = PartialState()
    with state.main_process_first():  # one process builds the procedural data, the others wait for it
        data_dir = Path(script.humanml3d_dir) if script.humanml3d_dir else ensure_dataset(script.data_dir)
    data_seconds = time.time() - start
    prompts = load_humanml3d(data_dir, "train")

    text_encoder, tokenizer, scorer = default_parts(bundle, device=state.device)
    policy = load_policy(bundle)
    peft_config = None
    if model_args.use_peft:
        model_args.lora_target_modules = model_args.lora_target_modules or LORA_TARGETS
        peft_config = get_peft_config(model_args)
    trainer_class = ParetoPPOTrainer if script.selection == "pareto" else MotionPPOTrainer
    trainer = trainer_class(policy, args, prompts, text_encoder, tokenizer, scorer, peft_config=peft_config)
    if state.is_main_process:
        print(f"{trainer_class.__name__}: {args.max_steps} steps, rollouts of {args.rollout_size} samples × "
              f"{state.num_processes} process(es) on {state.device}"
              + (f" ({torch.get_num_threads()} threads)" if state.device.type == "cpu" else "")
              + f", {len(prompts)} training prompts from {data_dir}")  # fmt: skip
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(args.output_dir)
    in_sync = trainer.weights_in_sync()
    output_dir = Path(args.output_dir)
    training = {
        "trainer": trainer_class.__name__,
        "steps": trainer.state.global_step,
        "rollouts": trainer.state.global_step * args.gradient_accumulation_steps // args.steps_per_rollout,
        "samples_per_rollout": args.rollout_size * state.num_processes,
        "data_s": data_seconds,  # finding or building the dataset
        "train_runtime_s": result.metrics.get("train_runtime"),
        "num_processes": state.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type.value),
        "mixed_precision": trainer.accelerator.mixed_precision,
        "device": str(state.device),
        "cpu_threads": torch.get_num_threads() if state.device.type == "cpu" else None,
        "weights_identical_across_processes": in_sync,
        "use_peft": bool(model_args.use_peft),
        "log_history": trainer.state.log_history,
    }
    trained_tokens = [token for token in args.reward_tokens if token != NO_TOKEN]
    guidance = {token: 1.0 for token in trained_tokens} if script.guidance == "mix" and trained_tokens else None
    if state.is_main_process:
        record = {"base": str(bundle.resolve()), "reward_token": guidance}
        (output_dir / BUNDLE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        (output_dir / "training.json").write_text(json.dumps(training, indent=2) + "\n")
        if script.report:
            from agents.ppo_report import write_report
            from reward_models import load_evaluator

            tuned = base_policy(trainer.accelerator.unwrap_model(trainer.model).policy)  # LoRA stays active
            base_pipe = TextToMotionPipeline(load_policy(bundle).to(state.device), tokenizer, text_encoder)
            tuned_pipe = TextToMotionPipeline(tuned, tokenizer, text_encoder, reward_token=guidance)
            settings = report_settings(script, args)
            summary = {key: value for key, value in training.items() if key != "log_history"}
            summary["command"] = " ".join(["recipes/ppo_pareto.py", *(sys.argv[1:] if argv is None else argv)])
            summary["settings"] = {"script": asdict(script), "model": asdict(model_args)}
            report = write_report(output_dir, base=base_pipe, tuned=tuned_pipe, scorer=scorer,
                                  evaluator=load_evaluator(bundle / "evaluator").to(state.device), data_dir=data_dir, settings=settings,
                                  training=summary, log_history=trainer.state.log_history)  # fmt: skip
            verdict = report["verdict"]
            print(f"report: {output_dir / 'report.md'}; fine-tuned above base beyond noise on top-1 R-precision: "
                  f"{verdict['top1']['above']}, on perception: {verdict['perception']['above']}; FID not worse: "
                  f"{verdict['fid']['not_worse']}")  # fmt: skip
        phases = [f"data {data_seconds:.0f} s"]
        if training["train_runtime_s"] is not None:
            phases.append(f"training {training['train_runtime_s']:.0f} s")
        if script.report:
            phases.append(f"report {report['wall_time_s']:.0f} s")
        print(f"wrote {output_dir} in {time.time() - start:.0f} s ({', '.join(phases)}; weights identical across "
              f"{state.num_processes} process(es): {in_sync})")  # fmt: skip
    state.wait_for_everyone()
    return 0 if in_sync else 1


if __name__ == "__main__":
    sys.exit(main())
