"""Supervised training of MotionGPT: next-code cross-entropy with random code corruption (+ L_align).

The motion of every caption row is tokenised once by the frozen VQ-VAE and every caption is
encoded once by the frozen sentence encoder; training then only touches the transformer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class CodeCaption:
    """One training pair: a caption's text feature and its motion's codes."""

    caption: str
    text_feature: torch.Tensor  # (text_dim,)
    codes: torch.Tensor  # (N,) long
    clip_id: str = ""


@torch.no_grad()
def tokenize_rows(vqvae, rows, batch_size: int = 64) -> list[torch.Tensor]:
    """Codes ``(N_i,)`` of each dataset row's motion (rows of ``motion_env.datasets`` loaders).

    Captions of one motion share its row ``id``, so each distinct motion is tokenised once.
    """
    vqvae.eval()
    ids = list(rows["id"])
    first = {}  # id -> index of the first row holding that motion
    for i, row_id in enumerate(ids):
        first.setdefault(row_id, i)
    unique = list(first.values())
    codes_of = {}
    for start in range(0, len(unique), batch_size):
        chunk = unique[start : start + batch_size]
        motions = [np.array(rows[i]["motion"], dtype=np.float32) for i in chunk]
        lengths = torch.tensor([len(m) for m in motions])
        padded = torch.zeros(len(motions), int(lengths.max()), motions[0].shape[-1])
        for j, motion in enumerate(motions):
            padded[j, : len(motion)] = torch.from_numpy(motion)
        codes, code_lengths = vqvae.encode(vqvae.normalize(padded), lengths)  # (B, N), (B,)
        for j, i in enumerate(chunk):
            codes_of[ids[i]] = codes[j, : code_lengths[j]].clone()
    return [codes_of[row_id] for row_id in ids]


def build_pairs(rows, codes: list[torch.Tensor], text_encoder, batch_size: int = 256) -> list[CodeCaption]:
    """Pair each row's codes with its caption's (cached) text feature."""
    captions = list(rows["caption"])
    features = torch.cat([text_encoder.encode(captions[i : i + batch_size]) for i in range(0, len(captions), batch_size)])
    return [CodeCaption(c, f, k, cid) for c, f, k, cid in zip(captions, features, codes, rows["clip_id"])]


@dataclass
class CodeCorruptionCollator:
    """Teacher-forcing batches with T2M-GPT's corruption of the *input* codes.

    Each input code is kept with probability ``keep_prob`` and otherwise replaced by a random
    code; the labels are always the true codes followed by END, so the model learns to recover
    from its own sampling mistakes.

    Returns ``input_ids`` (B, L) padded with PAD, ``attention_mask`` (B, L), ``labels`` (B, L + 1)
    (-100 past END), ``text_features`` (B, text_dim).
    """

    codebook_size: int
    end_token_id: int
    pad_token_id: int
    keep_prob: float = 0.5
    seed: int = 0
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self):
        if not 0.0 <= self.keep_prob <= 1.0:
            raise ValueError(f"keep_prob must be in [0, 1], got {self.keep_prob}")
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, pairs: list[CodeCaption]) -> dict[str, torch.Tensor]:
        longest = max(len(p.codes) for p in pairs)
        input_ids = torch.full((len(pairs), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(pairs), longest + 1), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(pairs), longest), dtype=torch.long)
        for i, pair in enumerate(pairs):
            n = len(pair.codes)
            input_ids[i, :n] = pair.codes
            labels[i, :n] = pair.codes
            labels[i, n] = self.end_token_id
            attention_mask[i, :n] = 1
        if self.keep_prob < 1.0:
            keep = torch.rand(input_ids.shape, generator=self.generator) < self.keep_prob
            random_codes = torch.randint(0, self.codebook_size, input_ids.shape, generator=self.generator)
            input_ids = torch.where(keep | (attention_mask == 0), input_ids, random_codes)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "text_features": torch.stack([p.text_feature for p in pairs]),
        }
