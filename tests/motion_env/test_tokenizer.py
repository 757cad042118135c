"""The motion VQ-VAE: shapes, padding invariance, training, codebook health, checkpoints."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from motion_env.features import FEATURE_DIM, Normalizer
from motion_env.tokenizer import MotionVQVAE, MotionVQVAEConfig


def tiny_config(**overrides) -> MotionVQVAEConfig:
    return MotionVQVAEConfig(**{"width": 32, "codebook_size": 16, "code_dim": 16, **overrides})


@pytest.fixture
def model() -> MotionVQVAE:
    """A tiny model whose codebook was initialised by one training batch, in eval mode."""
    torch.manual_seed(0)
    model = MotionVQVAE(tiny_config())
    model.train()
    model(torch.randn(8, 32, FEATURE_DIM))
    return model.eval()


def smooth_dataset(num_clips: int, num_frames: int, feature_dim: int, seed: int = 0):
    """Clips mixing two sinusoids of random frequency and phase into every feature, plus ragged
    lengths (multiples of 4, >= half the clip) with noise in the padding."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(2, feature_dim, generator=g)  # (L, D)
    t = torch.arange(num_frames, dtype=torch.float32)
    freq = 0.1 + 0.2 * torch.rand(num_clips, 2, 1, generator=g)
    phase = 6.28 * torch.rand(num_clips, 2, 1, generator=g)
    features = (torch.sin(freq * t + phase).transpose(1, 2) @ mixing) / 2**0.5  # (n, T, D)
    lengths = 4 * torch.randint(num_frames // 8, num_frames // 4 + 1, (num_clips,), generator=g)
    padding = torch.arange(num_frames) >= lengths[:, None]  # (n, T)
    features[padding] = 3 * torch.randn(int(padding.sum()), feature_dim, generator=g)
    return features, lengths


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="feature_dim .* got 100"):
        MotionVQVAEConfig(feature_dim=100)
    with pytest.raises(ValueError, match="ema_decay .* got 1.5"):
        MotionVQVAEConfig(ema_decay=1.5)
    assert MotionVQVAEConfig().downsample_factor == 4 and MotionVQVAEConfig(feature_dim=251).num_joints == 21


def test_shapes_and_code_lengths_with_ragged_lengths(model):
    features = torch.randn(3, 32, FEATURE_DIM)
    lengths = torch.tensor([32, 18, 8])  # 18 frames hold 4 whole codes; the last 2 are ignored
    out = model(features, lengths)
    assert out.reconstruction.shape == (3, 32, FEATURE_DIM)
    assert out.codes.shape == (3, 8) and out.codes.dtype == torch.long
    assert out.code_lengths.tolist() == [8, 4, 2]
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert 1.0 <= out.perplexity <= 16 and 0 < out.code_usage <= 1
    assert (out.reconstruction[1, 16:] == 0).all() and (out.reconstruction[2, 8:] == 0).all()
    assert out.reconstruction[1, :16].abs().sum() > 0

    codes, code_lengths = model.encode(features, lengths)
    assert codes.shape == (3, 8) and codes.dtype == torch.long and code_lengths.tolist() == [8, 4, 2]
    assert model.decode(codes, code_lengths).shape == (3, 32, FEATURE_DIM)

    # A row too short for one code gets 0 codes and decodes to 0 frames.
    codes, code_lengths = model.encode(features, torch.tensor([32, 3, 8]))
    assert code_lengths.tolist() == [8, 0, 2]
    assert (model.decode(codes, code_lengths)[1] == 0).all()


def test_padding_does_not_change_a_rows_codes(model):
    torch.manual_seed(1)
    short, long = torch.randn(1, 12, FEATURE_DIM), torch.randn(1, 32, FEATURE_DIM)
    batch = torch.cat([torch.cat([short, 5 * torch.randn(1, 20, FEATURE_DIM)], dim=1), long])  # (2, 32, D)
    lengths = torch.tensor([12, 32])

    alone, _ = model.encode(short)
    batched, code_lengths = model.encode(batch, lengths)
    assert torch.equal(batched[0, :3], alone[0]) and code_lengths.tolist() == [3, 8]
    assert len(set(batched.flatten().tolist())) > 2  # the codes say something

    z_alone, _, _ = model._encode_continuous(short, None)
    z_batched, _, _ = model._encode_continuous(batch, lengths)
    torch.testing.assert_close(z_batched[0, :3], z_alone[0], rtol=1e-5, atol=1e-5)

    decoded = model.decode(batched, code_lengths)  # (2, 32, D)
    torch.testing.assert_close(decoded[0, :12], model.decode(alone)[0], rtol=1e-5, atol=1e-5)


def test_losses_ignore_padded_frames(model):
    model.train()
    features, lengths = torch.randn(2, 16, FEATURE_DIM), torch.tensor([16, 8])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = model(features, lengths)
    model.load_state_dict(state)  # undo the EMA step so both passes see the same codebook
    garbled = features.clone()
    garbled[1, 8:] = 100.0
    second = model(garbled, lengths)
    for name in ("loss", "recon_loss", "commit_loss", "perplexity", "code_usage"):
        torch.testing.assert_close(first[name], second[name], msg=name)


@pytest.mark.parametrize("num_frames", [30, 33])
def test_frames_not_a_multiple_of_4_raise(model, num_frames):
    features = torch.randn(2, num_frames, FEATURE_DIM)
    with pytest.raises(ValueError, match=f"T={num_frames}"):
        model(features)
    with pytest.raises(ValueError, match=f"T={num_frames}"):
        model.encode(features)


def test_bad_inputs_raise(model):
    with pytest.raises(ValueError, match=r"\(B, T, 263\), got \(2, 8, 10\)"):
        model(torch.randn(2, 8, 10))
    with pytest.raises(ValueError, match=r"lengths .* got \[8, 9\]"):
        model(torch.randn(2, 8, FEATURE_DIM), torch.tensor([8, 9]))
    with pytest.raises(ValueError, match=r"no row holds a whole code .* lengths \[3, 0\]"):
        model(torch.randn(2, 8, FEATURE_DIM), torch.tensor([3, 0]))
    with pytest.raises(ValueError, match=r"codes must be in \[0, 16\)"):
        model.decode(torch.tensor([[3, 16]]))


def train(dead_code_threshold: float, steps: int = 100):
    torch.manual_seed(0)
    feature_dim = 35  # 3 joints: the losses see the same slices as for 22, at a seventh of the cost
    model = MotionVQVAE(tiny_config(feature_dim=feature_dim, dead_code_threshold=dead_code_threshold))
    features, lengths = smooth_dataset(64, 32, feature_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.eval()
    with torch.no_grad():
        initial = model(features, lengths).recon_loss.item()
    model.train()
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        batch = torch.randint(len(features), (8,), generator=g)
        loss = model(features[batch], lengths[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = model(features, lengths)
    live_codes = int((model.quantizer.ema_count >= 1.0).sum())
    return initial, final, live_codes


@pytest.fixture
def one_thread():
    """Convolutions this small run fastest on one thread, and a second thread that has to share
    its core with another process slows every step tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_reduces_loss_and_dead_code_reset_keeps_the_codebook_alive(one_thread):
    initial, with_reset, live_with_reset = train(dead_code_threshold=1.0)
    _, without_reset, live_without_reset = train(dead_code_threshold=0.0)

    assert with_reset.recon_loss < 0.4 * initial, (initial, with_reset.recon_loss)
    assert with_reset.code_usage >= 0.875 and live_with_reset == 16
    # Without the reset about half the codebook dies within 100 steps.
    assert live_without_reset <= live_with_reset - 4, (live_with_reset, live_without_reset)
    assert with_reset.code_usage > without_reset.code_usage
    assert with_reset.perplexity > without_reset.perplexity


def test_codebook_gets_no_gradient_and_eval_leaves_it_alone(model):
    features = torch.randn(2, 16, FEATURE_DIM)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    model(features).loss.backward()
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    assert not model.codebook.requires_grad
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0  # straight-through reaches the encoder

    model.train()
    model(features)
    assert not torch.equal(model.quantizer.ema_sum, buffers["quantizer.ema_sum"])


def test_decode_of_encode_is_the_eval_reconstruction(model):
    features, lengths = torch.randn(3, 24, FEATURE_DIM), torch.tensor([24, 12, 20])
    out = model(features, lengths)
    codes, code_lengths = model.encode(features, lengths)
    assert torch.equal(codes, out.codes)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(codes, code_lengths), out.reconstruction)


def test_decode_embeddings_of_codebook_rows_equals_decode(model):
    codes = torch.randint(16, (2, 5))
    torch.testing.assert_close(model.decode_embeddings(model.codebook[codes]), model.decode(codes))

    # Probability-weighted codebook rows decode differentiably (the L_align path).
    logits = torch.randn(2, 5, 16, requires_grad=True)
    embeddings = logits.softmax(-1) @ model.codebook  # (B, N, code_dim)
    model.decode_embeddings(embeddings).square().mean().backward()
    assert logits.grad.abs().sum() > 0


def test_decode_motion_in_length_batches_equals_one_padded_batch(model):
    g = torch.Generator().manual_seed(1)
    model.set_normalizer(torch.randn(FEATURE_DIM, generator=g), torch.rand(FEATURE_DIM, generator=g) + 0.5)
    codes = torch.randint(16, (9, 7), generator=g)
    code_lengths = torch.tensor([7, 0, 3, 5, 1, 7, 2, 0, 6])
    codes[torch.arange(7) >= code_lengths[:, None]] = 17  # PAD past each row's end
    one, frames = model.decode_motion(codes, code_lengths, batch_size=len(codes))
    for batch_size in (1, 2, 4):
        batched, batched_frames = model.decode_motion(codes, code_lengths, batch_size=batch_size)
        assert torch.equal(batched_frames, frames) and batched.shape == one.shape == (9, 28, FEATURE_DIM)
        torch.testing.assert_close(batched, one, rtol=1e-5, atol=1e-5)
    # Frames past a row's end, a row of 0 codes included, hold the decoded zero: the feature mean.
    past = torch.arange(28) >= frames[:, None]  # (B, T)
    torch.testing.assert_close(one[past], model.denormalize(torch.zeros(int(past.sum()), FEATURE_DIM)))
    # Each row is its own decode: the batch it sits in does not change it.
    for i in (0, 3, 6):
        alone, _ = model.decode_motion(codes[i : i + 1, : code_lengths[i]], code_lengths[i : i + 1])
        torch.testing.assert_close(one[i, : frames[i]], alone[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"code_lengths must have shape \(9,\) with values in \[0, N=7\]"):
        model.decode_motion(codes, code_lengths + 1)


def test_save_and_load_are_identical(model, tmp_path):
    g = torch.Generator().manual_seed(0)
    mean, std = torch.randn(FEATURE_DIM, generator=g), torch.rand(FEATURE_DIM, generator=g) + 0.5
    model.set_normalizer(mean, std)
    model.save_pretrained(tmp_path)

    saved = load_file(tmp_path / "model.safetensors")
    for name in ("feature_mean", "feature_std", "quantizer.embeddings", "quantizer.ema_count", "quantizer.initialized"):
        assert name in saved, name
    loaded = MotionVQVAE.from_pretrained(tmp_path).eval()
    assert loaded.config.model_type == "motion_vqvae" and loaded.config.codebook_size == 16
    reference = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, reference[name]), name

    features, lengths = torch.randn(2, 16, FEATURE_DIM), torch.tensor([16, 8])
    with torch.no_grad():
        ours, theirs = model(features, lengths), loaded(features, lengths)
    assert torch.equal(ours.codes, theirs.codes)
    assert torch.equal(ours.reconstruction, theirs.reconstruction)
    torch.testing.assert_close(loaded.normalize(features), model.normalize(features), rtol=0, atol=0)


def test_normalize_round_trip_matches_normalizer(model):
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=FEATURE_DIM), rng.uniform(0.1, 2.0, size=FEATURE_DIM)
    model.set_normalizer(mean, std)
    raw = torch.randn(2, 8, FEATURE_DIM) * 3
    normalized = model.normalize(raw)
    torch.testing.assert_close(normalized, Normalizer(mean, std).normalize(raw), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.denormalize(normalized), raw, rtol=1e-5, atol=1e-5)

    with pytest.raises(ValueError, match=r"shape \(263,\), got \(10,\)"):
        model.set_normalizer(np.zeros(10), np.ones(10))
    with pytest.raises(ValueError, match="std must be positive"):
        model.set_normalizer(mean, np.zeros(FEATURE_DIM))
