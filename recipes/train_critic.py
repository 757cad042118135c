"""Train the perception critic (Eq. 5) on preference pairs, then evaluate it on held-out pairs.

``python recipes/train_critic.py --converter_path outputs/smpl_converter --output_dir outputs/critic``
``python recipes/train_critic.py --motionpercept mlist_mdmfull_trainshuffle.pth --procedural_pairs false ...``

By default the pairs are made from the procedural train split: each clip (``new_joints/``) is
degraded (:mod:`motion_env.procedural.degrade`), every copy is converted to SMPL rotations by the
converter at ``--converter_path`` -- the same ``g`` the reward uses -- and cut into one aligned
window per clip. ``--motionpercept`` adds MotionCritic's human pairs (or trains on them alone with
``--procedural_pairs false``). At the end the critic is scored on held-out pairs made the same way
from the test split (and on ``--motionpercept_eval`` when given); the table is printed and written
to ``<output_dir>/critic_eval.json``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field


@dataclass
class CriticScriptArguments:
    data_dir: str = field(default="data/procedural", metadata={"help": "HumanML3D-layout dataset directory."})
    converter_path: str | None = field(
        default=None, metadata={"help": "JointsToSMPL directory (g); needed for procedural pairs and their evaluation."}
    )
    procedural_pairs: bool = field(default=True, metadata={"help": "Train on pairs made by degrading train clips."})
    motionpercept: str | None = field(default=None, metadata={"help": "MotionPercept .pth pair file to train on too."})
    motionpercept_eval: str | None = field(default=None, metadata={"help": "MotionPercept .pth file to evaluate on."})
    max_train_clips: int = field(default=1000, metadata={"help": "Use at most this many train clips (0 = all)."})
    eval_clips: int = field(default=100, metadata={"help": "Test clips the held-out pairs are made from (0 = all)."})
    artifacts_per_clip: int = field(default=2, metadata={"help": "Artifacts each train clip is degraded with (1-7)."})
    severity_pairs: bool = field(default=True, metadata={"help": "Also pair milder against stronger copies."})
    normalizer_windows: int = field(default=2000, metadata={"help": "Train windows that set the input mean/std."})
    window: int = field(default=60, metadata={"help": "Frames per critic window."})
    hidden_size: int = field(default=128, metadata={"help": "Width of the transformer."})
    num_layers: int = field(default=3, metadata={"help": "Transformer encoder layers."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads."})
    intermediate_size: int = field(default=256, metadata={"help": "Feed-forward width of each layer."})
    frames_per_token: int = field(default=3, metadata={"help": "Consecutive frames embedded as one token."})
    dropout: float = field(default=0.0, metadata={"help": "Transformer dropout."})


def _load_joints(data_dir, split: str, limit: int) -> list:
    import numpy as np

    from motion_env.datasets import MAX_CLIP_FRAMES, read_split

    clips = []
    for clip_id in read_split(data_dir, split):
        path = os.path.join(data_dir, "new_joints", f"{clip_id}.npy")
        if os.path.isfile(path):
            joints = np.load(path, allow_pickle=False)
            if 2 <= len(joints) < MAX_CLIP_FRAMES:
                clips.append(joints)
        if limit and len(clips) >= limit:
            break
    if not clips:
        raise ValueError(f"{data_dir}: split {split!r} has no clip with joints in new_joints/")
    return clips


def _input_statistics(pairs, kinematic_features: bool, count: int, seed: int):
    """Mean/std of the critic's per-frame inputs over up to ``count`` windows (valid frames only)."""
    import torch

    from reward_models.critic import critic_inputs

    rows = torch.randperm(len(pairs.windows), generator=torch.Generator().manual_seed(seed))[:count]
    total = total_sq = frames = 0
    for chunk in rows.split(256):  # running sums: all the inputs at once would take gigabytes
        x = critic_inputs(pairs.windows[chunk].float(), kinematic_features).double()  # (n, W, D)
        x = x[torch.arange(x.shape[1]) < pairs.lengths[chunk, None]]  # (frames, D), valid frames only
        total, total_sq, frames = total + x.sum(0), total_sq + (x**2).sum(0), frames + len(x)
    mean = total / frames
    return mean.float(), (total_sq / frames - mean**2).clamp(min=0).sqrt().float()


def main(argv: list[str] | None = None, convert=None) -> str:
    """Train, save, evaluate; return the output directory.

    ``convert`` replaces the converter loaded from ``--converter_path`` (a callable
    ``(joints (B, T, 22, 3), lengths (B,)) -> (B, T, 25, 6)``).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import Trainer, TrainingArguments
    from trl import TrlParser

    from reward_models.critic import MotionCritic, MotionCriticConfig, count_parameters
    from reward_models.critic_pairs import PairWindows, build_pair_windows, evaluate_critic, format_report, write_report
    from reward_models.motionpercept import read_motionpercept

    parser = TrlParser((CriticScriptArguments, TrainingArguments))
    script_args, training_args = parser.parse_args_and_config(argv)
    training_args.remove_unused_columns = False
    if not script_args.procedural_pairs and not script_args.motionpercept:
        raise ValueError("no training pairs: pass --motionpercept, or leave --procedural_pairs on")
    if convert is None and script_args.converter_path:
        from reward_models.smpl import JointsToSMPL

        convert = JointsToSMPL.from_pretrained(script_args.converter_path, dtype=torch.float32).eval().convert
    if script_args.procedural_pairs and convert is None:
        raise ValueError("procedural pairs need the joints->SMPL converter: pass --converter_path")

    timings, tic = {}, time.time()
    parts = []
    if script_args.procedural_pairs:
        clips = _load_joints(script_args.data_dir, "train", script_args.max_train_clips)
        parts.append(build_pair_windows(clips, convert, window=script_args.window, seed=training_args.seed,
                                        artifacts_per_clip=script_args.artifacts_per_clip,
                                        severity_pairs=script_args.severity_pairs))  # fmt: skip
    if script_args.motionpercept:
        parts.append(PairWindows.from_pairs(*read_motionpercept(script_args.motionpercept)))
    train_pairs = PairWindows.concat(parts)
    timings["pairs_s"] = time.time() - tic
    print(f"{len(train_pairs)} training pairs over {len(train_pairs.windows)} windows ({timings['pairs_s']:.0f} s)")

    config = MotionCriticConfig(window=script_args.window, hidden_size=script_args.hidden_size,
                                num_layers=script_args.num_layers, num_heads=script_args.num_heads,
                                intermediate_size=script_args.intermediate_size,
                                frames_per_token=script_args.frames_per_token, dropout=script_args.dropout)  # fmt: skip
    torch.manual_seed(training_args.seed)
    model = MotionCritic(config)
    model.set_input_normalizer(*_input_statistics(train_pairs, config.kinematic_features,
                                                  script_args.normalizer_windows, training_args.seed))  # fmt: skip
    print(f"critic: {count_parameters(model)} parameters")

    tic = time.time()
    trainer = Trainer(model=model, args=training_args, train_dataset=train_pairs)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    timings["train_s"] = time.time() - tic

    tic = time.time()
    report = {"train_pairs": len(train_pairs), "parameters": count_parameters(model)}
    if convert is not None:
        test_clips = _load_joints(script_args.data_dir, "test", script_args.eval_clips)
        held_out = build_pair_windows(test_clips, convert, window=script_args.window, seed=training_args.seed + 1)
        report["procedural_test"] = evaluate_critic(model, held_out)
        print(f"held-out pairs from {len(test_clips)} test clips:")
        print(format_report(report["procedural_test"]))
    if script_args.motionpercept_eval:
        report["motionpercept_eval"] = evaluate_critic(
            model, PairWindows.from_pairs(*read_motionpercept(script_args.motionpercept_eval))
        )
        print(f"MotionPercept pairwise accuracy: {100 * report['motionpercept_eval']['pairwise_accuracy']:.1f}%")
    timings["evaluation_s"] = time.time() - tic
    report["wall_time_s"] = timings
    if training_args.should_save:
        write_report(report, os.path.join(training_args.output_dir, "critic_eval.json"))
    return training_args.output_dir


if __name__ == "__main__":
    main()
