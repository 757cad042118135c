"""The batched scorer with the shipped reward models: directions, order, normalisation, errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from motion_env.features import joints_to_features
from motion_env.procedural.degrade import degrade
from reward_models.encoders import pad_arrays
from reward_models.rewards import REWARD_NAMES, RewardScorer

DEFAULT_REWARDS = Path(__file__).parents[2] / "checkpoints" / "default" / "rewards"


@pytest.fixture(scope="module")
def scorer():
    return RewardScorer.from_pretrained(DEFAULT_REWARDS)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Twelve procedural test clips of distinct primitives: (features, joints, caption)."""
    from motion_env.datasets import load_humanml3d
    from motion_env.procedural import generate_dataset

    root = generate_dataset(tmp_path_factory.mktemp("data") / "procedural", 60, seed=3, progress=False)
    rows = load_humanml3d(root, "train")
    out, seen = [], set()
    for row in rows:
        if row["start"] == row["end"] == 0.0 and row["clip_id"] not in seen:
            seen.add(row["clip_id"])
            joints = np.load(root / "new_joints" / f"{row['clip_id']}.npy")
            out.append((np.asarray(row["motion"]), joints, row["caption"]))
    return out[:12]


def _score(scorer, motions, prompts, ground_truth=None):
    features, lengths = pad_arrays(motions)
    return scorer(features, lengths, prompts, ground_truth)


def test_output_is_b_by_3_in_input_order(scorer, clips):
    motions = [m for m, _, _ in clips]
    captions = [c for _, _, c in clips]
    out = _score(scorer, motions, captions)
    assert out.rewards.shape == out.raw.shape == (len(clips), 3) and out.names == REWARD_NAMES
    order = np.random.default_rng(0).permutation(len(clips))
    shuffled = _score(scorer, [motions[i] for i in order], [captions[i] for i in order])
    torch.testing.assert_close(shuffled.raw, out.raw[order], rtol=1e-4, atol=1e-4)


def test_length_sorted_chunks_give_the_whole_batch_rewards_in_input_order(scorer, clips):
    motions = [m for m, _, _ in clips]
    captions = [c for _, _, c in clips]
    assert len({len(m) for m in motions}) > 3  # the chunks reorder rows
    whole = _score(scorer, motions, captions, motions).raw
    chunked = RewardScorer(scorer.encoders, scorer.converter, scorer.critic, scorer.weights, scorer.normalizer)
    chunked.motion_batch_size = 5  # 12 rows: chunks of 5, 5 and 2 by length
    torch.testing.assert_close(_score(chunked, motions, captions, motions).raw, whole, rtol=1e-5, atol=1e-4)
    singles = torch.cat([_score(scorer, [m], [c], [m]).raw for m, c in zip(motions, captions)])
    torch.testing.assert_close(whole, singles, rtol=1e-5, atol=1e-4)


def test_normalisation_is_eq12_of_the_raw_values(scorer, clips):
    out = _score(scorer, [m for m, _, _ in clips[:4]], [c for _, _, c in clips[:4]])
    low, high = torch.tensor(scorer.normalizer.low), torch.tensor(scorer.normalizer.high)
    torch.testing.assert_close(out.rewards, (out.raw - low) / (high - low))


def test_text_adherence_prefers_the_matching_caption(scorer, clips):
    motions = [m for m, _, _ in clips]
    captions = [c for _, _, c in clips]
    matched = _score(scorer, motions, captions).raw[:, 0]
    mismatched = _score(scorer, motions, captions[1:] + captions[:1]).raw[:, 0]
    assert (matched > mismatched).float().mean() >= 0.8, (matched, mismatched)


def test_motion_quality_peaks_at_the_ground_truth(scorer, clips):
    motions = [m for m, _, _ in clips]
    captions = [c for _, _, c in clips]
    itself = _score(scorer, motions, captions, motions).raw[:, 1]
    other = _score(scorer, motions[1:] + motions[:1], captions, motions).raw[:, 1]
    torch.testing.assert_close(itself, torch.zeros_like(itself), atol=1e-4, rtol=0)
    assert (other < itself).all()
    without = _score(scorer, motions, captions).raw[:, 1]  # the reference bank stands in
    assert torch.isfinite(without).all() and (without <= 1e-4).all()


def test_a_ground_truth_shared_by_rows_scores_as_separate_copies(scorer, clips):
    # a rollout passes one prompt's motion for each of its samples: the scorer embeds it once
    motions = [m for m, _, _ in clips[:3]] * 2
    captions = [c for _, _, c in clips[:3]] * 2
    shared = [clips[0][0]] * 3 + [clips[1][0], None, clips[1][0]]
    copies = [None if m is None else m.copy() for m in shared]
    torch.testing.assert_close(_score(scorer, motions, captions, shared).raw,
                               _score(scorer, motions, captions, copies).raw, rtol=1e-5, atol=1e-5)  # fmt: skip


def _lifted(features: np.ndarray, height: float) -> np.ndarray:
    """The motion ``height`` metres off the floor (root height and the joints' absolute y)."""
    out = features.copy()
    out[:, 3] += height
    out[:, 4 + 1 : 4 + 21 * 3 : 3] += height
    return out


def test_perception_drops_for_floating_motion(scorer, clips):
    # Joints -> features puts every clip back on the floor, so float the features themselves,
    # as a decoder can.
    motions = [m for m, _, _ in clips[:8]]
    captions = [c for _, _, c in clips[:8]]
    good = _score(scorer, motions, captions).raw[:, 2]
    worse = _score(scorer, [_lifted(m, 0.3) for m in motions], captions).raw[:, 2]
    assert (worse < good).all(), (good, worse)


@pytest.mark.parametrize("artifact", ["jitter", "stretched_bones", "foot_sliding", "jump_cut"])
def test_perception_drops_for_degraded_motion(scorer, clips, artifact):
    rng = np.random.default_rng(0)
    clean, degraded, captions = [], [], []
    for _, joints, caption in clips[:8]:
        bad = degrade(joints, artifact, 1.0, rng)
        clean.append(joints_to_features(joints))
        degraded.append(joints_to_features(bad))
        captions.append(caption)
    good = _score(scorer, clean, captions).raw[:, 2]
    worse = _score(scorer, degraded, captions).raw[:, 2]
    assert (worse < good).float().mean() >= 0.85, (good, worse)


def test_bad_input_is_named(scorer, clips):
    motion, _, caption = clips[0]
    features, lengths = pad_arrays([motion, motion])
    bad = features.clone()
    bad[1, 3, 7] = float("nan")
    with pytest.raises(ValueError, match=r"features\[1\] contains NaN"):
        scorer(bad, lengths, [caption, caption])
    padded_nan = features.clone()
    padded_nan[0, int(lengths[0]) :] = float("inf")  # past the length: ignored
    padded_nan = torch.cat([padded_nan, torch.zeros(2, 4, 263)], 1)
    assert torch.isfinite(scorer(padded_nan, lengths, [caption, caption]).raw).all()
    with pytest.raises(ValueError, match="263 features"):
        scorer(features[..., :251], lengths, [caption, caption])
    with pytest.raises(ValueError, match="zero-length"):
        scorer(features, torch.tensor([len(motion), 0]), [caption, caption])
    with pytest.raises(ValueError, match="got 1 prompts for 2 motions"):
        scorer(features, lengths, [caption])
    with pytest.raises(ValueError, match=r"prompts\[1\] must be a non-empty string"):
        scorer(features, lengths, [caption, "  "])
    with pytest.raises(ValueError, match=r"ground_truth\[0\]"):
        scorer(features, lengths, [caption, caption], [np.zeros((0, 263)), None])


def test_save_and_load_round_trip(scorer, clips, tmp_path):
    scorer.save_pretrained(tmp_path / "rewards")
    again = RewardScorer.from_pretrained(tmp_path / "rewards")
    motions = [m for m, _, _ in clips[:3]]
    captions = [c for _, _, c in clips[:3]]
    torch.testing.assert_close(_score(again, motions, captions).raw, _score(scorer, motions, captions).raw)


def test_reward_tokens_agree_with_the_text_encoders():
    from agents.text_encoder import REWARD_TOKEN_MEANINGS
    from reward_models.rewards import REWARD_TOKENS

    meanings = {
        "text_adherence": "text adherence",
        "motion_quality": "motion quality",
        "perception": "human preference",
    }
    assert {REWARD_TOKEN_MEANINGS[token] for token in REWARD_TOKENS.values()} == set(meanings.values())
    assert all(REWARD_TOKEN_MEANINGS[REWARD_TOKENS[name]] == meanings[name] for name in REWARD_NAMES)
