"""Train MotionGPT (text -> motion codes) with cross-entropy on corrupted codes.

``accelerate launch recipes/train_gpt.py --data_dir data/procedural --vqvae_path outputs/vqvae --output_dir outputs/gpt``
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class GPTScriptArguments:
    data_dir: str = field(default="data/procedural", metadata={"help": "HumanML3D-layout dataset directory."})
    vqvae_path: str = field(default="outputs/vqvae", metadata={"help": "Trained motion tokenizer directory."})
    text_encoder_path: str | None = field(
        default=None, metadata={"help": "Sentence-transformers directory; the packaged all-MiniLM-L6-v2 if unset."}
    )
    keep_prob: float = field(default=0.5, metadata={"help": "Probability an input code is kept (T2M-GPT: 0.5)."})
    hidden_size: int = field(default=256, metadata={"help": "Transformer width."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads."})
    intermediate_size: int = field(default=1024, metadata={"help": "MLP width."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout in attention and MLP."})
    align_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of L_align (text-motion embedding alignment); needs the TMR-style motion encoder."},
    )


def main(argv: list[str] | None = None) -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import Trainer, TrainingArguments
    from trl import TrlParser

    from agents.motion_gpt import MotionGPTConfig, MotionGPTForCausalLM
    from agents.pretrain import CodeCorruptionCollator, build_pairs, tokenize_rows
    from agents.text_encoder import SentenceEncoder
    from motion_env.datasets import load_humanml3d
    from motion_env.tokenizer import MotionVQVAE

    parser = TrlParser((GPTScriptArguments, TrainingArguments))
    script_args, training_args = parser.parse_args_and_config(argv)
    training_args.remove_unused_columns = False
    if script_args.align_weight:
        raise NotImplementedError(
            "align_weight > 0 (L_align) needs a TMR-style motion encoder from reward_models, which is not available "
            "yet; train with align_weight=0"
        )

    vqvae = MotionVQVAE.from_pretrained(script_args.vqvae_path, dtype="float32")
    rows = load_humanml3d(script_args.data_dir, "train")
    encoder = SentenceEncoder(script_args.text_encoder_path)
    pairs = build_pairs(rows, tokenize_rows(vqvae, rows), encoder)

    config = MotionGPTConfig(
        codebook_size=vqvae.config.codebook_size, text_dim=encoder.dim, hidden_size=script_args.hidden_size,
        num_hidden_layers=script_args.num_hidden_layers, num_attention_heads=script_args.num_attention_heads,
        intermediate_size=script_args.intermediate_size, dropout=script_args.dropout,
    )  # fmt: skip
    model = MotionGPTForCausalLM(config)
    collator = CodeCorruptionCollator(config.codebook_size, config.end_token_id, config.pad_token_id,
                                      keep_prob=script_args.keep_prob, seed=training_args.seed)  # fmt: skip
    trainer = Trainer(model=model, args=training_args, train_dataset=pairs, data_collator=collator)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    return training_args.output_dir


if __name__ == "__main__":
    main()
