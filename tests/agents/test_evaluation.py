"""The evaluation judge (what it measures per motion does not depend on how motions are batched), the test set,
the held-out check, and the reward-space measurements beside the protocol."""

import copy

import numpy as np
import pytest
import torch

from agents.evaluation import (
    EvaluationSettings,
    MotionJudge,
    TestSet,
    check_held_out,
    evaluate,
    reward_space_table,
)
from agents.pipeline import TextToMotionPipeline, default_checkpoint_dir, load_policy
from motion_env.datasets import load_humanml3d
from motion_env.emission import PromptSet, default_parts
from motion_env.procedural import generate_dataset
from reward_models import load_evaluator
from reward_models.encoders import pad_arrays
from reward_models.rewards import RewardScorer


def test_judge_batches_by_length_and_answers_in_input_order(tmp_path):
    bundle = default_checkpoint_dir()
    scorer = RewardScorer.from_pretrained(bundle / "rewards")
    judge = MotionJudge(load_evaluator(bundle / "evaluator"), scorer.converter, scorer.critic, batch_size=4)
    motions = TestSet(generate_dataset(tmp_path / "data", 40, seed=5, workers=1, progress=False), "test").motions[:9]
    assert len({len(m) for m in motions}) > 4  # length order differs from input order
    features, lengths = pad_arrays(motions)
    batched = judge.motions(features, lengths)
    for i, motion in enumerate(motions):
        single = judge.motions(torch.as_tensor(motion, dtype=torch.float32)[None], torch.tensor([len(motion)]))
        for key, values in batched.items():
            np.testing.assert_allclose(values[i], single[key][0], rtol=1e-4, atol=1e-4, err_msg=f"{key}[{i}]")


def test_test_and_prompt_sets_hold_the_rows_of_the_dataset_as_writable_arrays(tmp_path):
    data = generate_dataset(tmp_path / "data", 24, seed=3, workers=1, progress=False)
    rows = load_humanml3d(data, "train")
    prompts = PromptSet(rows)
    assert prompts.texts == [rows[i]["caption"] for i in range(len(rows))]
    for i, motion in enumerate(prompts.motions):
        np.testing.assert_array_equal(motion, rows[i]["motion"])
        assert motion.dtype == np.float32 and motion.flags.writeable  # not a read-only view of the Arrow table
    test_set = TestSet(data, "test")
    test_rows = load_humanml3d(data, "test")
    # one entry per motion: a whole clip, or a captioned span of one with the span's frames and captions only
    motions, captions = {}, {}
    for row in test_rows:
        motions[row["id"]] = row["motion"]
        captions.setdefault(row["id"], []).append(row["caption"])
    assert any("#" in i for i in motions) and any("#" not in i for i in motions)  # both kinds are covered
    assert test_set.ids == sorted(motions)
    for motion_id, motion, texts in zip(test_set.ids, test_set.motions, test_set.captions):
        np.testing.assert_array_equal(motion, motions[motion_id])
        assert texts == captions[motion_id]
        assert motion.flags.writeable


def test_the_evaluator_must_be_held_out_from_the_reward_models():
    bundle = default_checkpoint_dir()
    scorer = RewardScorer.from_pretrained(bundle / "rewards")
    check_held_out(load_evaluator(bundle / "evaluator"), scorer)  # the shipped evaluator is its own model
    for family, encoder in scorer.encoders.items():
        for candidate in (encoder, copy.deepcopy(encoder)):  # the scorer's own module, or its weights loaded again
            with pytest.raises(ValueError, match=f"weights of the reward scorer's '{family}' encoder"):
                check_held_out(candidate, scorer)


def test_reward_spaces_are_measured_beside_the_protocol_on_the_same_batches(tmp_path):
    bundle = default_checkpoint_dir()
    text_encoder, vqvae, scorer = default_parts(bundle)
    evaluator = load_evaluator(bundle / "evaluator")
    judge = MotionJudge(evaluator, scorer.converter, scorer.critic)
    pipe = TextToMotionPipeline(load_policy(bundle), vqvae, text_encoder)
    test_set = TestSet(generate_dataset(tmp_path / "data", 60, seed=5, workers=1, progress=False), "test")
    settings = EvaluationSettings(repetitions=2, per_motion_repetitions=1, mm_repetitions=0, batch_size=4,
                                  diversity_pairs=4)  # fmt: skip
    plain = evaluate({"model": pipe}, judge, test_set, settings, progress=False)
    assert "reward_spaces" not in plain

    settings.reward_space_repetitions = 2
    encoders = {"copy": copy.deepcopy(evaluator), **scorer.encoders}  # a copy of the evaluator as a "reward" space
    result = evaluate({"model": pipe}, judge, test_set, settings, progress=False, reward_encoders=encoders)
    assert result["repetitions"] == plain["repetitions"]  # the protocol's numbers do not move
    spaces = result["reward_spaces"]
    assert spaces["spaces"] == ["evaluator", "copy", "guo", "tmr"]
    for row in ("Real motion", "model"):
        measured = spaces["repetitions"][row]
        assert set(measured) == set(spaces["spaces"])
        for metric in ("top1", "top2", "top3", "mm_dist"):
            assert len(measured["evaluator"][metric]) == 2
            # the same embeddings in input order and the same R-precision batches as the evaluator's column
            np.testing.assert_allclose(measured["copy"][metric], measured["evaluator"][metric], rtol=1e-6)
        assert measured["guo"]["mm_dist"] != measured["evaluator"]["mm_dist"]  # another space
        # the evaluator column's MM-Dist is the protocol's (only the R-precision batches are drawn apart)
        np.testing.assert_allclose(measured["evaluator"]["mm_dist"], result["repetitions"][row]["mm_dist"])

    table = reward_space_table(spaces, baseline="Real motion")
    assert "| Method | evaluator (held out) | copy (reward) | guo (reward) | tmr (reward) |" in table
    assert "model − Real motion, paired: evaluator " in table


def test_reward_spaces_need_encoders_with_their_own_names():
    settings = EvaluationSettings(reward_space_repetitions=1)
    with pytest.raises(ValueError, match="needs reward_encoders"):
        evaluate({}, None, None, settings)
    with pytest.raises(ValueError, match="may not be named 'evaluator'"):
        evaluate({}, None, None, settings, reward_encoders={"evaluator": object()})
    with pytest.raises(ValueError, match="reward_space_repetitions must be >= 0"):
        evaluate({}, None, None, EvaluationSettings(reward_space_repetitions=-1))


def test_fid_against_each_repetitions_real_crops_changes_fid_alone(tmp_path):
    bundle = default_checkpoint_dir()
    text_encoder, vqvae, scorer = default_parts(bundle)
    judge = MotionJudge(load_evaluator(bundle / "evaluator"), scorer.converter, scorer.critic)
    pipe = TextToMotionPipeline(load_policy(bundle), vqvae, text_encoder)
    test_set = TestSet(generate_dataset(tmp_path / "data", 60, seed=5, workers=1, progress=False), "test")
    settings = EvaluationSettings(repetitions=2, per_motion_repetitions=1, mm_repetitions=0, batch_size=4,
                                  diversity_pairs=4)  # fmt: skip
    full = evaluate({"model": pipe}, judge, test_set, settings, progress=False)["repetitions"]
    settings.fid_reference = "crops"
    crops = evaluate({"model": pipe}, judge, test_set, settings, progress=False)["repetitions"]
    for row in ("Real motion", "model"):
        assert {k: v for k, v in crops[row].items() if k != "fid"} == {k: v for k, v in full[row].items() if k != "fid"}
        assert crops[row]["fid"] != full[row]["fid"]
    # the real row against a second, independent draw of crops: near 0, not 0 (not compared with itself)
    assert all(0 < value < min(crops["model"]["fid"]) for value in crops["Real motion"]["fid"])
    with pytest.raises(ValueError, match="fid_reference must be one of"):
        evaluate({}, judge, test_set, EvaluationSettings(fid_reference="clips"))
