"""Train a text/motion encoder (Guo-style or TMR-style) and report its retrieval on the test split.

The default bundle's three encoders (each a few minutes on one CPU core)::

    COMMON="--data_dir data/procedural --per_device_train_batch_size 64 --learning_rate 1e-3 --lr_scheduler_type cosine"
    python recipes/train_encoders.py --family guo --negatives all --seed 0 --max_steps 450 --warmup_steps 22 \
        $COMMON --output_dir outputs/encoders/guo
    python recipes/train_encoders.py --family tmr --seed 0 --max_steps 300 --warmup_steps 15 \
        $COMMON --output_dir outputs/encoders/tmr
    python recipes/train_encoders.py --family guo --negatives all --splits train,val --seed 1 --max_steps 450 \
        --warmup_steps 22 $COMMON --output_dir outputs/encoders/evaluator    # the evaluator, never a reward

Options can also come from a YAML file: ``--config encoders.yaml``.

Text features are computed once per distinct caption before training (word vectors for Guo,
frozen MiniLM token states for TMR). Each step draws one caption per motion and, as Guo et al.
do, trims each motion by 0 or 4 frames at random (two chances in three of 0) from a random start.
The model is written with ``save_pretrained``; ``retrieval.json`` beside it holds the test-split
R-precision in batches of 32 (see :func:`reward_models.retrieval.retrieval_report`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

FAMILIES = ("guo", "tmr")


@dataclass
class EncoderScriptArguments:
    family: str = field(
        default="guo", metadata={"help": "Encoder family: guo (Eq. 1, bi-GRUs) or tmr (Eq. 2, transformers)."}
    )
    data_dir: str = field(default="data/procedural", metadata={"help": "HumanML3D-layout dataset directory."})
    splits: str = field(
        default="train", metadata={"help": "Comma-separated training splits (the evaluator uses train,val)."}
    )
    eval_split: str = field(default="test", metadata={"help": "Split the retrieval report is measured on."})
    retrieval_batch_size: int = field(
        default=32, metadata={"help": "Captions per retrieval batch (Guo's protocol: 32)."}
    )
    retrieval_repeats: int = field(
        default=20, metadata={"help": "Rounds of random batches of 32 in the retrieval report."}
    )
    embed_dim: int | None = field(
        default=None, metadata={"help": "Embedding width (default: 512 for guo, 256 for tmr)."}
    )
    dropout: float | None = field(default=None, metadata={"help": "Dropout (default: 0.2 for guo, 0.1 for tmr)."})
    drop_foot_contact: bool | None = field(
        default=None, metadata={"help": "Ignore the 4 foot-contact features (default: yes for guo, no for tmr)."}
    )
    text_hidden: int = field(default=128, metadata={"help": "guo: GRU width of the text encoder."})
    motion_width: int = field(default=128, metadata={"help": "guo: channels of the two strided convs."})
    motion_hidden: int = field(default=128, metadata={"help": "guo: GRU width of the motion encoder."})
    margin: float = field(default=10.0, metadata={"help": "guo: hinge margin of Eq. 1."})
    negatives: str = field(
        default="shift", metadata={"help": "guo: 'shift' (one shifted negative per row) or 'all' (every other row)."}
    )
    hidden: int = field(default=128, metadata={"help": "tmr: transformer width."})
    intermediate_size: int = field(default=256, metadata={"help": "tmr: feed-forward width."})
    num_heads: int = field(default=4, metadata={"help": "tmr: attention heads."})
    text_layers: int = field(default=2, metadata={"help": "tmr: text transformer layers."})
    motion_layers: int = field(default=2, metadata={"help": "tmr: motion transformer layers."})
    frames_per_token: int = field(default=4, metadata={"help": "tmr: consecutive frames per motion token."})
    init_temperature: float = field(default=0.1, metadata={"help": "tmr: initial InfoNCE temperature."})
    duplicate_threshold: float = field(
        default=0.95, metadata={"help": "tmr: caption cosine similarity above which a negative is dropped."}
    )


def build_model(args: EncoderScriptArguments):
    """A fresh encoder of ``args.family`` sized by ``args``."""
    if args.family not in FAMILIES:
        raise ValueError(f"--family must be one of {FAMILIES}, got {args.family!r}")
    common = {k: v for k, v in (("embed_dim", args.embed_dim), ("dropout", args.dropout),
                                 ("drop_foot_contact", args.drop_foot_contact)) if v is not None}  # fmt: skip
    if args.family == "guo":
        from reward_models.guo import GuoEncoder, GuoEncoderConfig

        return GuoEncoder(GuoEncoderConfig(text_hidden=args.text_hidden, motion_width=args.motion_width,
                                           motion_hidden=args.motion_hidden, margin=args.margin,
                                           negatives=args.negatives, **common))  # fmt: skip
    from reward_models.tmr import TMREncoder, TMREncoderConfig

    return TMREncoder(TMREncoderConfig(hidden=args.hidden, intermediate_size=args.intermediate_size,
                                       num_heads=args.num_heads, text_layers=args.text_layers,
                                       motion_layers=args.motion_layers, frames_per_token=args.frames_per_token,
                                       init_temperature=args.init_temperature, duplicate_threshold=args.duplicate_threshold,
                                       **common))  # fmt: skip


class PairCollator:
    """Batches of (motion, one of its captions): raw features padded, text from the precomputed table.

    Items are motion indices. Returns the keyword arguments of the encoder's ``forward``.
    """

    def __init__(self, encoder, motions, caption_ids, text_items, unit: int = 4, seed: int = 0):
        self.collate_text = encoder.collate_text
        self.motions, self.caption_ids, self.text_items = motions, caption_ids, text_items
        self.unit = unit
        self.rng = np.random.default_rng(seed)

    def _crop(self, motion: np.ndarray) -> np.ndarray:
        # Guo et al.: keep all whole units, or one unit fewer (1 time in 3), from a random start.
        units = len(motion) // self.unit - (1 if self.rng.integers(3) == 2 and len(motion) >= 2 * self.unit else 0)
        length = units * self.unit
        start = int(self.rng.integers(0, len(motion) - length + 1))
        return motion[start : start + length]

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        pieces = [self._crop(self.motions[i]) for i in indices]
        lengths = torch.tensor([len(p) for p in pieces])
        features = torch.zeros(len(pieces), int(lengths.max()), pieces[0].shape[-1])  # (B, T, D)
        for row, piece in enumerate(pieces):
            features[row, : len(piece)] = torch.from_numpy(piece)
        captions = [int(self.rng.choice(self.caption_ids[i])) for i in indices]
        text = self.collate_text([self.text_items[c] for c in captions])
        return {"features": features, "lengths": lengths, **text, "motion_ids": torch.tensor(indices),
                "caption_ids": torch.tensor(captions)}  # fmt: skip


def load_pairs(data_dir: str, splits: list[str]):
    """Motions (one per row id), their caption indices, and the distinct ``(caption, tokens)`` list."""
    from motion_env.datasets import load_humanml3d

    motions, caption_ids, captions, position, seen = [], [], [], {}, {}
    for split in splits:
        for row in load_humanml3d(data_dir, split):
            key = (split, row["id"])
            if key not in seen:
                seen[key] = len(motions)
                motions.append(np.asarray(row["motion"], dtype=np.float32)[: int(row["length"])])
                caption_ids.append([])
            if row["caption"] not in position:
                position[row["caption"]] = len(captions)
                captions.append((row["caption"], list(row["tokens"])))
            caption_ids[seen[key]].append(position[row["caption"]])
    return motions, caption_ids, captions


def text_table(encoder, captions: list[tuple[str, list[str]]]) -> list[dict]:
    """Per distinct caption, the encoder's text features (computed once, before training)."""
    if hasattr(encoder, "token_features") and all(tokens for _, tokens in captions):
        return encoder.token_features([tokens for _, tokens in captions])  # the dataset's own tagging
    return encoder.text_features([caption for caption, _ in captions])


def main(argv: list[str] | None = None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import Trainer, TrainingArguments
    from trl import TrlParser

    from motion_env.datasets import load_humanml3d, load_normalizer
    from reward_models.retrieval import retrieval_report

    parser = TrlParser((EncoderScriptArguments, TrainingArguments))
    script_args, training_args = parser.parse_args_and_config(argv)
    training_args.remove_unused_columns = False
    splits = [s.strip() for s in script_args.splits.split(",") if s.strip()]
    start = time.time()

    torch.manual_seed(training_args.seed)
    model = build_model(script_args)
    normalizer = load_normalizer(script_args.data_dir)
    model.set_normalizer(normalizer.mean, normalizer.std)
    motions, caption_ids, captions = load_pairs(script_args.data_dir, splits)
    tic = time.time()
    table = text_table(model, captions)
    text_s = time.time() - tic
    print(f"{len(motions)} motions, {len(captions)} distinct captions; text features in {text_s:.0f} s", flush=True)

    collator = PairCollator(model, motions, caption_ids, table, seed=training_args.seed)
    trainer = Trainer(model=model, args=training_args, train_dataset=list(range(len(motions))),
                      data_collator=collator)  # fmt: skip
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_s = time.time() - start
    model.eval()
    model.save_pretrained(training_args.output_dir)

    tic = time.time()
    rows = load_humanml3d(script_args.data_dir, script_args.eval_split)
    report = retrieval_report(model, rows, batch_size=script_args.retrieval_batch_size, repeats=script_args.retrieval_repeats,
                              seed=training_args.seed)  # fmt: skip
    record = {
        "family": script_args.family,
        "model_type": model.config.model_type,
        "train_splits": splits,
        "eval_split": script_args.eval_split,
        "seed": training_args.seed,
        "max_steps": training_args.max_steps,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "wall_time_s": {"text_features": text_s, "train_total": train_s, "retrieval": time.time() - tic},
        "retrieval": report,
        "script_args": asdict(script_args),
    }
    with open(os.path.join(training_args.output_dir, "retrieval.json"), "w") as file:
        json.dump(record, file, indent=2)
    print(json.dumps(report, indent=2))
    return record


if __name__ == "__main__":
    main()
