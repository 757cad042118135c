import numpy as np
import torch

from agents.pretrain import CodeCaption, CodeCorruptionCollator, tokenize_rows
from motion_env.tokenizer import MotionVQVAE, MotionVQVAEConfig

K, END, PAD = 16, 16, 17


def _pairs(lengths):
    g = torch.Generator().manual_seed(0)
    return [CodeCaption(f"c{i}", torch.randn(8, generator=g), torch.randint(0, K, (n,), generator=g))
            for i, n in enumerate(lengths)]  # fmt: skip


def test_labels_are_the_true_codes_then_end():
    pairs = _pairs([5, 3])
    batch = CodeCorruptionCollator(K, END, PAD, keep_prob=0.5)(pairs)
    assert batch["input_ids"].shape == (2, 5) and batch["labels"].shape == (2, 6)
    assert torch.equal(batch["labels"][0, :5], pairs[0].codes) and batch["labels"][0, 5] == END
    assert torch.equal(batch["labels"][1, :4], torch.cat([pairs[1].codes, torch.tensor([END])]))
    assert (batch["labels"][1, 4:] == -100).all()
    assert torch.equal(batch["attention_mask"], torch.tensor([[1] * 5, [1] * 3 + [0] * 2]))
    assert (batch["input_ids"][1, 3:] == PAD).all()  # padding is never corrupted
    assert batch["text_features"].shape == (2, 8)


def test_corruption_rate_follows_keep_prob():
    pairs = _pairs([40] * 50)
    clean = CodeCorruptionCollator(K, END, PAD, keep_prob=1.0)(pairs)
    assert torch.equal(clean["input_ids"], clean["labels"][:, :40])
    noisy = CodeCorruptionCollator(K, END, PAD, keep_prob=0.5, seed=1)(pairs)
    changed = (noisy["input_ids"] != noisy["labels"][:, :40]).float().mean().item()
    # Half the codes are redrawn, and a redrawn code differs from the true one 15 times in 16.
    assert abs(changed - 0.5 * 15 / 16) < 0.05
    again = CodeCorruptionCollator(K, END, PAD, keep_prob=0.5, seed=1)(pairs)
    assert torch.equal(again["input_ids"], noisy["input_ids"])


def test_tokenize_rows_gives_a_code_per_four_frames_once_per_motion():
    model = MotionVQVAE(MotionVQVAEConfig(width=16, depth=1, codebook_size=8, code_dim=8)).eval()
    motions = [np.random.default_rng(i).normal(size=(n, 263)).astype(np.float32) for i, n in enumerate([40, 52, 64])]
    # Four caption rows over three motions: rows 0 and 3 are two captions of one motion.
    rows = [{"id": f"m{i}", "motion": motions[i]} for i in (0, 1, 2, 0)]

    class Rows(list):
        def __getitem__(self, key):
            return [r[key] for r in self] if isinstance(key, str) else list.__getitem__(self, key)

    calls = []
    encode = model.encode
    model.encode = lambda x, lengths: calls.append(len(x)) or encode(x, lengths)
    codes = tokenize_rows(model, Rows(rows), batch_size=2)
    assert [len(c) for c in codes] == [10, 13, 16, 10]
    assert sum(calls) == 3  # the shared motion is tokenised once
    assert torch.equal(codes[0], codes[3])
    model.encode = encode
    alone = tokenize_rows(model, Rows(rows[1:2]), batch_size=1)
    assert torch.equal(alone[0], codes[1])  # batching does not change a row's codes
