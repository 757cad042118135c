import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agents.ppo_report import ReportSettings, _reward_summary, _verdict, write_report

REPO = Path(__file__).resolve().parents[2]
NAMES = ("base", "tuned")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of the default policy against itself, measured as little as possible."""
    from agents.motion_gpt import MotionGPTForCausalLM
    from agents.pipeline import TextToMotionPipeline, default_checkpoint_dir
    from motion_env.emission import default_parts
    from motion_env.procedural import ensure_dataset
    from reward_models import load_evaluator

    bundle = default_checkpoint_dir()
    text_encoder, vqvae, scorer = default_parts()
    policy = MotionGPTForCausalLM.from_pretrained(bundle / "gpt", dtype=torch.float32)
    pipe = TextToMotionPipeline(policy, vqvae, text_encoder)
    out = tmp_path_factory.mktemp("report")
    settings = ReportSettings(repetitions=1, reward_prompts=8, num_gifs=1, max_clips=64)
    result = write_report(out, base=pipe, tuned=pipe, scorer=scorer, evaluator=load_evaluator(bundle / "evaluator"),
                          data_dir=ensure_dataset(REPO / "data" / "procedural"), settings=settings,
                          training={"steps": 12, "wall_time_s": 34.5, "final": {"rewards/mean": 0.25}},
                          names=NAMES, progress=False)  # fmt: skip
    return out, result


def test_report_writes_every_file(report):
    out, result = report
    assert sorted(p.name for p in out.iterdir()) == ["gifs", "pareto_front.png", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(result))
    assert set(result) >= {"evaluation", "reward_vectors", "verdict", "files", "settings", "training"}
    assert result["num_test_clips"] == 64 and result["settings"]["max_clips"] == 64
    assert result["training"]["final"]["rewards/mean"] == 0.25
    with Image.open(out / "pareto_front.png") as png:
        assert png.format == "PNG" and png.width > 400
    (gif,) = result["files"]["gifs"]
    assert gif.startswith("gifs/0_") and gif.endswith(".gif")
    with Image.open(out / gif) as image:
        assert image.format == "GIF" and image.width == 2 * 320 and image.n_frames >= 40


def test_reward_vectors_and_hypervolumes(report):
    models = report[1]["reward_vectors"]["models"]
    assert list(models) == list(NAMES)
    for summary in models.values():
        mean = list(summary["mean"].values())
        assert len(mean) == 3 and summary["num_samples"] == 8 and 1 <= summary["front_size"] <= 8
        expected = math.prod(mean) if min(mean) > 0 else 0.0
        assert summary["hypervolume_of_mean"] == pytest.approx(expected)
        assert summary["hypervolume_of_samples"] > 0
    assert models["base"] == models["tuned"]  # the same captions and seed for both models


def test_hypervolume_of_mean_is_the_box_product_or_zero():
    rewards = torch.tensor([[0.2, 0.4, 0.9], [0.6, 0.8, 0.3]])
    summary, front = _reward_summary(rewards)
    assert summary["hypervolume_of_mean"] == pytest.approx(0.4 * 0.6 * 0.6)
    assert summary["hypervolume_of_samples"] == pytest.approx(0.2 * 0.4 * 0.9 + 0.6 * 0.8 * 0.3 - 0.2 * 0.4 * 0.3)
    assert summary["front_size"] == 2 and front.tolist() == [True, True]
    summary, _ = _reward_summary(torch.tensor([[0.2, -0.4, 0.9], [0.6, 0.1, 0.3]]))
    assert summary["hypervolume_of_mean"] == 0.0  # mean motion quality -0.15 is below the reference


def test_identical_models_give_identical_rows_and_no_improvement(report):
    out, result = report
    rows = result["evaluation"]["rows"]
    assert set(rows) == {"Real motion", *NAMES}
    assert rows["base"] == rows["tuned"]  # the same draws, batches and pairs for both models
    verdict = result["verdict"]
    assert verdict["top1"]["difference"] == 0.0 and verdict["top1"]["above"] is False
    assert verdict["perception"]["above"] is False and verdict["fid"]["not_worse"] is True
    assert verdict["improved"] is False
    text = (out / "report.md").read_text()
    assert "is not above the base" in text and "**does not hold**" in text
    assert f"{verdict['top1']['tuned']:.4f}" in text and f"{verdict['fid']['limit']:.4f}" in text
    assert "![Reward vectors and Pareto fronts](pareto_front.png)" in text and result["files"]["gifs"][0] in text
    assert "| final/rewards/mean | 0.25 |" in text


def test_verdict_needs_a_difference_beyond_both_intervals():
    def rows(top1, perception, fid):
        return {"top1": top1, "perception": perception, "fid": fid}

    base = rows((0.40, 0.01), (30.0, 0.5), (1.00, 0.03))
    better = _verdict({"b": base, "t": rows((0.43, 0.01), (31.5, 0.5), (1.05, 0.03))}, "b", "t")
    assert better["top1"]["above"] and better["perception"]["above"] and better["fid"]["not_worse"]
    assert better["improved"] and better["fid"]["limit"] == pytest.approx(1.06)
    within_noise = _verdict({"b": base, "t": rows((0.41, 0.01), (30.9, 0.5), (1.07, 0.03))}, "b", "t")
    assert not within_noise["top1"]["above"] and not within_noise["perception"]["above"]
    assert not within_noise["fid"]["not_worse"] and not within_noise["improved"]
    assert np.isclose(within_noise["top1"]["ci95_sum"], 0.02)


def test_settings_and_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="num_gifs"):
        ReportSettings(reward_prompts=2, num_gifs=3)
    with pytest.raises(ValueError, match="max_clips=16 is below batch_size=32"):
        ReportSettings(max_clips=16)
    with pytest.raises(ValueError, match="repetitions"):
        ReportSettings(repetitions=0)
    with pytest.raises(ValueError, match="distinct"):
        write_report(tmp_path, base=None, tuned=None, scorer=None, evaluator=None, data_dir=tmp_path, names=("a", "a"))
