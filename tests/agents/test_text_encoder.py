import json
import re
import shutil

import pytest
import torch
from torch import nn

from agents.text_encoder import (
    DEFAULT_ALPHA,
    REWARD_TOKENS,
    GuidedTextEncoder,
    SentenceEncoder,
    default_model_path,
    with_reward_token,
)

TEXTS = ["a person walks forward", "a man jumps twice", "someone waves with the left hand"]


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


@pytest.fixture
def model_calls(encoder):
    """Batch sizes of every transformer forward, from a fresh cache."""
    encoder.clear_cache()
    calls = []
    handle = encoder.model.register_forward_hook(lambda m, args, kwargs, out: calls.append(len(kwargs["input_ids"])),
                                                 with_kwargs=True)
    yield calls
    handle.remove()


def test_features_are_unit_384d_and_semantic(encoder):
    assert encoder.dim == 384
    assert encoder.max_length == 256
    features = encoder.encode(["a person walks forward", "someone is walking ahead", "the stock market fell today"])
    assert features.shape == (3, 384) and features.dtype == torch.float32
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(3))
    similarity = features @ features.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3


def test_frozen_in_eval_even_under_a_training_parent(encoder):
    nn.Sequential(encoder).train()
    assert not encoder.training and not encoder.model.training
    assert not any(p.requires_grad for p in encoder.parameters())
    assert encoder.to("cpu").encode(TEXTS[:1]).device == encoder.device


def test_cache_skips_recomputation(encoder, model_calls):
    first = encoder.encode(TEXTS)
    assert model_calls == [3] and encoder.cache_len == 3
    again = encoder.encode(list(reversed(TEXTS)))
    assert model_calls == [3]
    assert torch.equal(again, first.flip(0))
    encoder.encode([TEXTS[0], "a person sits down"])
    assert model_calls == [3, 1] and encoder.cache_len == 4


def test_cache_evicts_least_recently_used(encoder, model_calls, monkeypatch):
    monkeypatch.setattr(encoder, "cache_size", 2)
    encoder.encode(TEXTS)  # more strings than the cache holds: all still returned
    assert encoder.cache_len == 2
    encoder.encode(TEXTS[1:])
    assert model_calls == [3]
    encoder.encode(TEXTS[:1])
    assert model_calls == [3, 1]


def test_order_kept_with_duplicates(encoder, model_calls):
    texts = [TEXTS[0], TEXTS[1], TEXTS[0], TEXTS[2], TEXTS[1]]
    features = encoder.encode(texts, batch_size=2)
    assert model_calls == [2, 1]  # duplicates encoded once
    encoder.clear_cache()
    one_by_one = torch.cat([encoder.encode([t]) for t in texts])
    torch.testing.assert_close(features, one_by_one, atol=1e-5, rtol=0)
    assert torch.equal(features[0], features[2]) and torch.equal(features[1], features[4])
    assert not torch.allclose(features[0], features[1])


def test_bad_text_raises(encoder):
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        encoder.encode(["fine", "   "])
    with pytest.raises(TypeError, match=r"texts\[0\] must be a str"):
        encoder.encode([3])
    with pytest.raises(TypeError, match="list of str"):
        encoder.encode("a single string")
    assert encoder.encode([]).shape == (0, 384)


def test_overlong_text_warns_and_is_truncated(encoder):
    long_text = "walk " * 300  # 300 word tokens; 254 fit beside [CLS] and [SEP]
    with pytest.warns(UserWarning, match="drops 46") as record:
        features = encoder.encode([long_text, "short"])
    assert record[0].filename == __file__
    assert features.shape == (2, 384) and torch.isfinite(features).all()
    torch.testing.assert_close(features[0], encoder.encode(["walk " * 254])[0], atol=1e-5, rtol=0)


def test_with_reward_token():
    assert REWARD_TOKENS == ("<mm>", "<mt>", "<perception>")
    assert with_reward_token("a person runs forward ", "<mm>") == "a person runs forward <mm>"
    with pytest.raises(ValueError, match=r"<mm> \(motion quality\), <mt> \(text adherence\)"):
        with_reward_token("a person runs", "<speed>")


def test_eq11_single_token(encoder):
    guided = GuidedTextEncoder(encoder, alpha=0.3)
    base = encoder.encode(TEXTS)
    with_mm = encoder.encode([with_reward_token(t, "<mm>") for t in TEXTS])
    torch.testing.assert_close(guided.features(TEXTS, "<mm>"), 0.7 * base + 0.3 * with_mm)
    assert torch.equal(guided.features(TEXTS), base)
    torch.testing.assert_close(guided.features(TEXTS, "<mm>", alpha=1.0), with_mm)
    torch.testing.assert_close(guided.features(TEXTS, "<mm>", alpha=0.0), base)
    # The tokens must make reward types distinguishable.
    with_mt = guided.features(TEXTS, "<mt>")
    assert (guided.features(TEXTS, "<mm>") - with_mt).norm(dim=-1).min() > 1e-3


def test_eq11_token_mix(encoder):
    guided = GuidedTextEncoder(encoder)
    assert guided.alpha == DEFAULT_ALPHA
    base = encoder.encode(TEXTS)
    mm = encoder.encode([with_reward_token(t, "<mm>") for t in TEXTS])
    mt = encoder.encode([with_reward_token(t, "<mt>") for t in TEXTS])
    a = DEFAULT_ALPHA
    expected = (1 - a) * base + a * (0.25 * mm + 0.75 * mt)
    torch.testing.assert_close(guided.features(TEXTS, {"<mm>": 1.0, "<mt>": 3.0}), expected)


def test_eq11_per_row_tokens(encoder):
    guided = GuidedTextEncoder(encoder, alpha=0.4)
    features = guided.features(TEXTS, ["<perception>", None, {"<mm>": 1, "<mt>": 1}])
    f = lambda t: encoder.encode([t])[0]  # noqa: E731
    t0, t1, t2 = TEXTS
    expected = torch.stack([
        0.6 * f(t0) + 0.4 * f(with_reward_token(t0, "<perception>")),
        f(t1),
        0.6 * f(t2) + 0.2 * f(with_reward_token(t2, "<mm>")) + 0.2 * f(with_reward_token(t2, "<mt>")),
    ])
    torch.testing.assert_close(features, expected)


def test_guidance_arguments_checked(encoder):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        GuidedTextEncoder(encoder, alpha=1.5)
    guided = GuidedTextEncoder(encoder)
    with pytest.raises(ValueError, match="alpha must be in"):
        guided.features(TEXTS, "<mm>", alpha=-0.1)
    with pytest.raises(ValueError, match="unknown reward token '<fast>'"):
        guided.features(TEXTS, "<fast>")
    with pytest.raises(ValueError, match=">= 0"):
        guided.features(TEXTS, {"<mm>": -1.0, "<mt>": 2.0})
    with pytest.raises(ValueError, match="positive sum"):
        guided.features(TEXTS, {"<mm>": 0.0})
    with pytest.raises(ValueError, match="one entry per text: got 2 for 3"):
        guided.features(TEXTS, ["<mm>", "<mt>"])
    with pytest.raises(ValueError, match=r"texts\[0\] is empty"):
        guided.features([""], "<mm>")


def test_loads_any_sentence_transformers_directory(encoder, tmp_path):
    copy = tmp_path / "minilm"
    shutil.copytree(default_model_path(), copy)
    torch.testing.assert_close(SentenceEncoder(copy).encode(TEXTS), encoder.encode(TEXTS))

    # CLS pooling without Normalize: the pooling is read from the directory, not assumed.
    pooling = json.loads((copy / "1_Pooling/config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (copy / "1_Pooling/config.json").write_text(json.dumps(pooling))
    modules = json.loads((copy / "modules.json").read_text())
    (copy / "modules.json").write_text(json.dumps(modules[:2]))
    cls_encoder = SentenceEncoder(copy)
    batch = encoder.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = encoder.model(**batch).last_hidden_state[:, 0]
    torch.testing.assert_close(cls_encoder.encode(TEXTS), expected, atol=1e-5, rtol=0)


def test_incomplete_directory_raises(tmp_path):
    broken = tmp_path / "no_weights"
    shutil.copytree(default_model_path(), broken, ignore=shutil.ignore_patterns("model.safetensors"))
    with pytest.raises(FileNotFoundError, match=re.escape(f"{broken}: missing model.safetensors")):
        SentenceEncoder(broken)
    (broken / "modules.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing modules.json"):
        SentenceEncoder(broken)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        SentenceEncoder(tmp_path / "absent")
