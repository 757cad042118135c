"""Train the motion tokenizer (VQ-VAE) on a HumanML3D-layout dataset.

``accelerate launch recipes/train_vqvae.py --data_dir data/procedural --output_dir outputs/vqvae``
``accelerate launch recipes/train_vqvae.py --config recipes/configs/vqvae.yaml``
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class VQVAEScriptArguments:
    data_dir: str = field(default="data/procedural", metadata={"help": "HumanML3D-layout dataset directory."})
    window: int = field(default=64, metadata={"help": "Frames per training window (a multiple of 4)."})
    width: int = field(default=256, metadata={"help": "Channels of the conv trunk."})
    depth: int = field(default=2, metadata={"help": "Residual blocks per resolution level."})
    codebook_size: int = field(default=512, metadata={"help": "Number of codes K."})
    code_dim: int = field(default=256, metadata={"help": "Width of a code embedding."})
    commitment_weight: float = field(default=0.02, metadata={"help": "Weight of the commitment loss."})
    joint_loss_weight: float = field(default=0.5, metadata={"help": "Extra reconstruction weight on joint positions."})
    root_loss_weight: float = field(default=1.0, metadata={"help": "Extra reconstruction weight on the root channels."})


def main(argv: list[str] | None = None) -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import Trainer, TrainingArguments
    from trl import TrlParser

    from motion_env.datasets import load_normalizer
    from motion_env.tokenizer import MotionVQVAE, MotionVQVAEConfig
    from motion_env.windows import WindowCollator, load_clips

    parser = TrlParser((VQVAEScriptArguments, TrainingArguments))
    script_args, training_args = parser.parse_args_and_config(argv)
    training_args.remove_unused_columns = False

    config = MotionVQVAEConfig(width=script_args.width, depth=script_args.depth, codebook_size=script_args.codebook_size,
                               code_dim=script_args.code_dim, commitment_weight=script_args.commitment_weight,
                               joint_loss_weight=script_args.joint_loss_weight,
                               root_loss_weight=script_args.root_loss_weight)  # fmt: skip
    model = MotionVQVAE(config)
    normalizer = load_normalizer(script_args.data_dir)
    model.set_normalizer(normalizer.mean, normalizer.std)
    clips = load_clips(script_args.data_dir, "train")
    collator = WindowCollator(normalizer.normalize, script_args.window, seed=training_args.seed)

    trainer = Trainer(model=model, args=training_args, train_dataset=clips, data_collator=collator)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    return training_args.output_dir


if __name__ == "__main__":
    main()
