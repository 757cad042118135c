"""Train the joints -> SMPL converter ``g`` (Appendix A) on a dataset that keeps its rotations.

``python recipes/train_smpl_converter.py --data_dir data/procedural --output_dir outputs/smpl_converter``
``python recipes/train_smpl_converter.py --config converter.yaml`` (YAML keys are the flags' names)

Targets are the clips' stored rotations (``smpl/<id>.npz``) moved onto their joints
(:func:`reward_models.smpl.smpl_targets`), computed once at start. Training reads random windows,
each turned about the vertical by a random angle, since the converter must serve any heading.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class SMPLConverterScriptArguments:
    data_dir: str = field(default="data/procedural", metadata={"help": "HumanML3D-layout dataset with smpl/<id>.npz."})
    split: str = field(default="train", metadata={"help": "Split whose clips are trained on."})
    max_clips: int = field(default=0, metadata={"help": "Use only the split's first N clips (0 = all)."})
    window: int = field(default=64, metadata={"help": "Frames per training window."})
    random_yaw: bool = field(default=True, metadata={"help": "Turn each window about Y by a random angle."})
    conv_channels: int = field(default=32, metadata={"help": "Channels of the spatial Conv1D layers."})
    conv_layers: int = field(default=2, metadata={"help": "Number of spatial Conv1D layers."})
    hidden_size: int = field(default=192, metadata={"help": "Width of the per-frame embedding."})
    lstm_hidden_size: int = field(default=128, metadata={"help": "LSTM hidden units per direction."})
    lstm_layers: int = field(default=1, metadata={"help": "Stacked LSTM layers."})
    rotation_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the 6D rotation loss."})
    joint_loss_weight: float = field(
        default=10.0, metadata={"help": "Weight of the forward-kinematics joint loss (m)."}
    )


class ConverterWindowCollator:
    """Batches of random windows: ``{"joints": (B, W, 22, 3), "lengths": (B,), "labels": (B, W, 25, 6)}``.

    Clips shorter than the window are taken whole and zero-padded. With ``random_yaw`` each window
    is turned about Y by a uniform angle: the joints, the pelvis rotation and position together.
    """

    def __init__(self, window: int, random_yaw: bool = True, seed: int = 0):
        if window < 2:
            raise ValueError(f"window must be >= 2 frames, got {window}")
        self.window, self.random_yaw = window, random_yaw
        self.rng = np.random.default_rng(seed)

    def __call__(self, clips: list[dict]) -> dict[str, torch.Tensor]:
        joints = np.zeros((len(clips), self.window, 22, 3), dtype=np.float32)
        labels = np.zeros((len(clips), self.window, 25, 6), dtype=np.float32)
        lengths = np.zeros(len(clips), dtype=np.int64)
        for i, clip in enumerate(clips):
            start = int(self.rng.integers(0, max(len(clip["joints"]) - self.window, 0) + 1))
            piece = slice(start, start + self.window)
            n = len(clip["joints"][piece])
            joints[i, :n], labels[i, :n], lengths[i] = clip["joints"][piece], clip["targets"][piece], n
        if self.random_yaw:
            angle = self.rng.uniform(-np.pi, np.pi, len(clips))
            c, s, zero, one = np.cos(angle), np.sin(angle), np.zeros(len(clips)), np.ones(len(clips))
            yaw = np.stack([c, zero, s, zero, one, zero, -s, zero, c], -1).reshape(-1, 3, 3)  # (B, 3, 3)
            joints = np.einsum("bij,btkj->btki", yaw, joints)
            # The pelvis rotation's two 6D columns and the pelvis position are world vectors.
            for part in (np.s_[:, :, 0, :3], np.s_[:, :, 0, 3:], np.s_[:, :, 24, :3]):
                labels[part] = np.einsum("bij,btj->bti", yaw, labels[part])
        return {"joints": torch.from_numpy(joints.astype(np.float32)), "lengths": torch.from_numpy(lengths),
                "labels": torch.from_numpy(labels.astype(np.float32))}  # fmt: skip


def load_converter_clips(data_dir: str, split: str, max_clips: int = 0) -> list[dict]:
    """Every clip of a split with its joints ``(T, 22, 3)`` and targets ``(T, 25, 6)``."""
    from motion_env.datasets import read_split
    from reward_models.smpl import smpl_targets

    ids = read_split(data_dir, split)
    ids = ids[:max_clips] if max_clips > 0 else ids
    clips = [{"joints": np.load(os.path.join(data_dir, "new_joints", f"{clip_id}.npy")).astype(np.float32),
              "targets": smpl_targets(data_dir, clip_id)} for clip_id in ids]  # fmt: skip
    if not clips:
        raise ValueError(f"{data_dir}: split {split!r} has no clips")
    return clips


def main(argv: list[str] | None = None) -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import Trainer, TrainingArguments
    from trl import TrlParser

    from reward_models.smpl import JointsToSMPL, JointsToSMPLConfig

    parser = TrlParser((SMPLConverterScriptArguments, TrainingArguments))
    script_args, training_args = parser.parse_args_and_config(argv)
    training_args.remove_unused_columns = False

    config = JointsToSMPLConfig(conv_channels=script_args.conv_channels, conv_layers=script_args.conv_layers,
                                hidden_size=script_args.hidden_size, lstm_hidden_size=script_args.lstm_hidden_size,
                                lstm_layers=script_args.lstm_layers,
                                rotation_loss_weight=script_args.rotation_loss_weight,
                                joint_loss_weight=script_args.joint_loss_weight)  # fmt: skip
    model = JointsToSMPL(config)
    clips = load_converter_clips(script_args.data_dir, script_args.split, script_args.max_clips)
    collator = ConverterWindowCollator(script_args.window, script_args.random_yaw, seed=training_args.seed)

    trainer = Trainer(model=model, args=training_args, train_dataset=clips, data_collator=collator)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    return training_args.output_dir


if __name__ == "__main__":
    main()
