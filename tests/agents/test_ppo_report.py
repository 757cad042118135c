import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from agents.plots import logged_panels
from agents.ppo_report import ReportSettings, _reward_summary, _verdict, write_report
from reward_models.metrics import summarize

REPO = Path(__file__).resolve().parents[2]
NAMES = ("base", "tuned")
# what a Trainer logs: rollout metrics in some entries, update metrics in all, a closing summary
LOG_HISTORY = [
    {"step": 6, "loss": 0.1, "rewards/text_adherence/mean": 0.3, "objective/kl": 0.0, "policy/entropy": 1.5},
    {"step": 12, "loss": 0.05, "policy/entropy": 1.4},
    {"step": 18, "loss": 0.0, "rewards/text_adherence/mean": 0.4, "objective/kl": 0.2, "policy/entropy": 1.3},
    {"step": 18, "train_runtime": 3.0, "train_loss": 0.05},
]


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
    settings = ReportSettings(repetitions=2, per_motion_repetitions=1, real_per_motion_repetitions=2, reward_prompts=8,
                              num_gifs=1, max_motions=64)  # fmt: skip
    result = write_report(out, base=pipe, tuned=pipe, scorer=scorer, evaluator=load_evaluator(bundle / "evaluator"),
                          data_dir=ensure_dataset(REPO / "data" / "procedural"), settings=settings,
                          training={"steps": 12, "wall_time_s": 34.5, "final": {"rewards/mean": 0.25}},
                          log_history=LOG_HISTORY, names=NAMES, progress=False)  # fmt: skip
    return out, result


def test_report_writes_every_file(report):
    out, result = report
    assert sorted(p.name for p in out.iterdir()) == ["gifs", "pareto_front.png", "report.json", "report.md",
                                                     "training_curves.png"]  # fmt: skip
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(result))
    assert set(result) >= {"evaluation", "reward_vectors", "verdict", "files", "settings", "training"}
    assert result["num_test_motions"] == 64 and result["settings"]["max_motions"] == 64
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
    assert "**not above the base beyond noise**" in text and "**does not hold**" in text
    assert f"{verdict['top1']['tuned']:.4f}" in text and "paired difference +0.0000 ±0.0000 over 2 repetitions" in text
    # perception, foot skating and jerk only in the first repetition, the protocol's metrics in both
    assert "paired difference +0.0000 ±inf over 1 repetitions" in text
    assert "Perception, foot skating and jerk: the first 1 repetitions (real motion: the first 2)." in text
    for row, per_motion in (("Real motion", 2), (NAMES[0], 1), (NAMES[1], 1)):
        counts = {metric: len(values) for metric, values in result["evaluation"]["repetitions"][row].items()}
        assert counts["top1"] == counts["fid"] == 2 and counts["perception"] == counts["foot_skating"] == per_motion
    assert "![Reward vectors and Pareto fronts](pareto_front.png)" in text and result["files"]["gifs"][0] in text
    assert "| final/rewards/mean | 0.25 |" in text
    assert (
        "![Training curves](training_curves.png)" in text
        and result["files"]["training_curves"] == "training_curves.png"
    )
    with Image.open(out / "training_curves.png") as png:
        assert png.format == "PNG" and png.size[0] > png.size[1] > 200


def test_verdict_rests_on_the_paired_differences():
    def model(top1, perception, fid):
        return {"top1": top1, "perception": perception, "fid": fid}

    def rows(repetitions):
        return {name: {metric: summarize(values) for metric, values in model.items()}
                for name, model in repetitions.items()}  # fmt: skip

    base = model([0.40, 0.36, 0.44, 0.38, 0.42], [30.0, 29.0, 31.0, 30.5, 29.5], [1.0, 1.2, 0.8, 1.1, 0.9])
    # the same draws move both models alike: a steady gain is seen although the intervals overlap
    steady = model([0.42, 0.38, 0.46, 0.40, 0.44], [30.3, 29.2, 31.4, 30.7, 29.9], [1.0, 1.25, 0.8, 1.05, 0.95])
    repetitions = {"b": base, "t": steady}
    verdict = _verdict(rows(repetitions), repetitions, "b", "t")
    assert verdict["top1"]["above"] and verdict["perception"]["above"] and verdict["fid"]["not_worse"]
    assert verdict["improved"] and verdict["top1"]["intervals_overlap"]
    assert verdict["top1"]["difference"] == pytest.approx(0.02) and verdict["top1"]["difference_ci95"] < 1e-9
    # the same mean gains, but scattered across repetitions: within noise; FID steadily worse
    scattered = model([0.45, 0.33, 0.47, 0.36, 0.49], [31.5, 28.5, 31.9, 29.9, 29.4], [1.1, 1.3, 0.9, 1.2, 1.0])
    repetitions = {"b": base, "t": scattered}
    verdict = _verdict(rows(repetitions), repetitions, "b", "t")
    assert verdict["top1"]["difference"] == pytest.approx(0.02)
    assert not verdict["top1"]["above"] and not verdict["perception"]["above"]
    assert not verdict["fid"]["not_worse"] and not verdict["improved"]


def test_settings_and_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="num_gifs"):
        ReportSettings(reward_prompts=2, num_gifs=3)
    with pytest.raises(ValueError, match="max_motions=16 is below batch_size=32"):
        ReportSettings(max_motions=16)
    with pytest.raises(ValueError, match="repetitions"):
        ReportSettings(repetitions=0)
    with pytest.raises(ValueError, match=r"per_motion_repetitions must lie in \[1, repetitions=5\] or be None, got 6"):
        ReportSettings(repetitions=5, per_motion_repetitions=6)
    with pytest.raises(
        ValueError, match=r"real_per_motion_repetitions must lie in \[1, repetitions=5\] or be None, got 0"
    ):
        ReportSettings(repetitions=5, real_per_motion_repetitions=0)
    with pytest.raises(ValueError, match="distinct"):
        write_report(tmp_path, base=None, tuned=None, scorer=None, evaluator=None, data_dir=tmp_path, names=("a", "a"))


def test_training_curves_only_for_a_history_with_plotted_metrics():
    panels = logged_panels(LOG_HISTORY)
    assert [name for name, _ in panels] == ["rewards (normalised, rollout means)", "KL to the reference (per sample)",
                                            "policy entropy (per token)"]  # fmt: skip
    steps, values = panels[2][1]["policy/entropy"]
    assert steps.tolist() == [6, 12, 18] and values.tolist() == [1.5, 1.4, 1.3]
    # a run shorter than its logging interval logs only the closing summary: the report goes on without the figure
    assert not logged_panels([{"step": 4, "train_runtime": 1.0, "train_loss": 0.1}])
    assert not logged_panels([]) and not logged_panels(None)
