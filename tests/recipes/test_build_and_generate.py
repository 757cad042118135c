"""The default-bundle recipe (tiny mode), the generation CLI, and the shipped bundle."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

RECIPES = Path(__file__).parents[2] / "recipes"
DEFAULT = Path(__file__).parents[2] / "checkpoints" / "default"


def _run(script, *args, timeout=600):
    return subprocess.run([sys.executable, str(RECIPES / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    result = _run("build_default.py", "--tiny", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_tiny_build_writes_fp16_models_and_a_record(tiny_bundle):
    from safetensors import safe_open

    record = json.loads((tiny_bundle / "record.json").read_text())
    assert record["tiny"] and record["seed"] == 0
    tokenizer = record["metrics"]["tokenizer_test"]
    assert tokenizer["mpjpe_mm"] > 0 and 0 < tokenizer["codebook_usage"] <= 1
    assert "generated_accuracy" in record["metrics"]["generator_text_adherence_proxy"]
    for part in ("vqvae", "gpt"):
        with safe_open(tiny_bundle / part / "model.safetensors", "pt") as f:
            name = next(k for k in f.keys() if k.endswith("weight"))
            assert str(f.get_tensor(name).dtype) == "torch.float16"


def test_tiny_build_writes_a_calibrated_scorer_and_an_evaluator(tiny_bundle):
    from reward_models import load_evaluator
    from reward_models.rewards import RewardScorer

    scorer = RewardScorer.from_pretrained(tiny_bundle / "rewards")
    assert set(scorer.encoders) == {"guo", "tmr"} and scorer.normalizer is not None and scorer.bank
    low, high = scorer.normalizer.low, scorer.normalizer.high
    assert all(h > lo for lo, h in zip(low, high))
    record = json.loads((tiny_bundle / "record.json").read_text())
    assert {"critic", "guo", "tmr", "evaluator", "scorer_calibration"} <= set(record["metrics"]["rewards"])
    assert load_evaluator(tiny_bundle / "evaluator").config.model_type == "guo_text_motion"
    assert not list(tiny_bundle.glob("rewards/**/training_args.bin"))  # nothing pickled ships


def test_evaluate_cli(tiny_bundle, tmp_path):
    result = _run("evaluate.py", "--model", tiny_bundle, "--name", "tiny", "--model", tiny_bundle, "--name", "guided",
                  "--reward_token", "default", "--reward_token", "<mt>+<perception>",
                  "--evaluator", tiny_bundle / "evaluator",
                  "--rewards", tiny_bundle / "rewards", "--data_dir", tiny_bundle / "work" / "data",
                  "--repetitions", "2", "--mm_repetitions", "1", "--batch_size", "4", "--diversity_pairs", "4",
                  "--mm_num_texts", "4", "--mm_num_samples", "3", "--mm_num_pairs", "2", "--reward_spaces", "1",
                  "--out", tmp_path / "eval.json")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((tmp_path / "eval.json").read_text())
    rows = written["rows"]
    assert set(rows) == {"Real motion", "tiny", "guided"}
    assert written["guidance"] == {"tiny": None, "guided": {"<mt>": 1.0, "<perception>": 1.0}}
    assert "paired differences from 'tiny'" in result.stdout and "guided: top1" in result.stdout
    assert written["reward_spaces"]["spaces"] == ["evaluator", "guo", "tmr"]
    assert "| evaluator (held out) | guo (reward) | tmr (reward) |" in result.stdout
    assert "guided − tiny, paired: evaluator " in result.stdout
    too_many = _run("evaluate.py", "--repetitions", "2", "--reward_spaces", "3", "--out", tmp_path / "bad.json")
    assert too_many.returncode == 2 and "--reward_spaces must be in [0, --repetitions=2], got 3" in too_many.stderr
    bad = _run("evaluate.py", "--model", tiny_bundle, "--reward_token", "<fast>", "--out", tmp_path / "bad.json")
    assert bad.returncode == 2 and "unknown reward token '<fast>'" in bad.stderr
    assert 0 <= rows["tiny"]["top1"][0] <= rows["tiny"]["top3"][0] <= 1 and rows["tiny"]["fid"][0] >= 0
    assert "multimodality" in rows["tiny"] and "perception" in rows["Real motion"]
    assert "Real motion" in result.stdout and "R-prec" in result.stdout


def test_generate_cli(tiny_bundle, tmp_path):
    result = _run("generate.py", "--model", tiny_bundle, "--text", "a person waves with the left hand",
                  "--out", tmp_path / "wave.gif", "--num-samples", "2", "--reward-token", "perception")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for i in range(2):
        joints = np.load(tmp_path / f"wave_{i}_joints.npy")
        features = np.load(tmp_path / f"wave_{i}_features.npy")
        assert joints.shape == (len(features), 22, 3) and features.shape[1] == 263
        assert Image.open(tmp_path / f"wave_{i}.gif").n_frames == len(joints)
    empty = _run("generate.py", "--model", tiny_bundle, "--text", " ", "--out", tmp_path / "x.gif")
    assert empty.returncode == 2 and "empty" in empty.stderr
    token = _run("generate.py", "--model", tiny_bundle, "--text", "a person runs", "--reward-token", "speed",
                 "--out", tmp_path / "x.gif")  # fmt: skip
    assert token.returncode == 2 and "<perception>" in token.stderr
    broken = tmp_path / "broken"
    (broken / "gpt").mkdir(parents=True)
    (broken / "vqvae").mkdir()
    (broken / "gpt" / "config.json").write_text((tiny_bundle / "gpt" / "config.json").read_text())
    (broken / "gpt" / "model.safetensors").write_bytes((tiny_bundle / "gpt" / "model.safetensors").read_bytes()[:100])
    truncated = _run("generate.py", "--model", broken, "--text", "a person runs", "--out", tmp_path / "x.gif")
    assert truncated.returncode == 2 and "truncated or corrupt" in truncated.stderr and "gpt" in truncated.stderr
    (broken / "gpt" / "model.safetensors").write_bytes((tiny_bundle / "gpt" / "model.safetensors").read_bytes())
    (broken / "vqvae" / "config.json").write_text((tiny_bundle / "vqvae" / "config.json").read_text())
    missing = _run("generate.py", "--model", broken, "--text", "a person runs", "--out", tmp_path / "x.gif")
    assert missing.returncode == 2 and "vqvae" in missing.stderr and "model.safetensors" in missing.stderr


@pytest.mark.skipif(not (DEFAULT / "gpt").is_dir(), reason="the default bundle is not built")
def test_default_bundle_is_small_and_generates_with_no_model_argument(tmp_path):
    size = sum(p.stat().st_size for p in DEFAULT.rglob("*") if p.is_file())
    assert size < 30e6
    result = _run("generate.py", "--text", "a person waves with the left hand", "--out", tmp_path / "wave.gif")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "wave.gif").is_file() and (tmp_path / "wave_joints.npy").is_file()


# ---- the main job on the tiny bundle ----

TINY_CONFIG = RECIPES / "configs" / "tiny.yaml"


def _ppo(tiny_bundle, out, *args, launcher=None, timeout=600, env=None):
    command = [*(launcher or [sys.executable]), str(RECIPES / "ppo_pareto.py"), "--config", str(TINY_CONFIG),
               "--model_dir", str(tiny_bundle), "--data_dir", str(tiny_bundle / "work" / "data"),
               "--output_dir", str(out), *map(str, args)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def test_main_job_fine_tunes_and_writes_model_logs_and_report(tiny_bundle, tmp_path):
    out = tmp_path / "ppo"
    result = _ppo(tiny_bundle, out, "--report_to", "tensorboard", "--eval_batch_size", "4", "--reward_prompts", "4",
                  "--eval_reward_spaces", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "gpt" / "model.safetensors").is_file() and (out / "value.safetensors").is_file()
    assert list((out / "runs").rglob("events.out.tfevents.*"))
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["steps"] == 4 and report["training"]["weights_identical_across_processes"]
    assert report["training"]["data_s"] >= 0 and report["training"]["train_runtime_s"] > 0
    assert re.search(r"wrote .* in \d+ s \(data \d+ s, training \d+ s, report \d+ s; weights identical", result.stdout)
    assert {"MotionGPT (base)", "MotionRL (fine-tuned)"} <= set(report["evaluation"]["rows"])
    spaces = report["evaluation"]["reward_spaces"]  # --eval_reward_spaces 1: the reward encoders' spaces too
    assert (
        spaces["spaces"] == ["evaluator", "guo", "tmr"]
        and len(spaces["repetitions"]["Real motion"]["guo"]["top1"]) == 1
    )
    assert "| Method | evaluator (held out) | guo (reward) | tmr (reward) |" in (out / "report.md").read_text()
    assert (out / "report.md").is_file() and (out / "pareto_front.png").is_file() and list(out.glob("gifs/*.gif"))
    assert (out / "training_curves.png").is_file() and "![Training curves](training_curves.png)" in (
        out / "report.md").read_text()  # fmt: skip
    from agents.pipeline import TextToMotionPipeline

    pipe = TextToMotionPipeline.from_pretrained(out)  # the output is a model directory of its own
    assert pipe(["a person waves"], seed=0).joints.shape[-2:] == (22, 3)
    trained = {"<mt>": 1.0, "<mm>": 1.0, "<perception>": 1.0}  # the tiny config trains with all three tokens
    assert json.loads((out / "bundle.json").read_text())["reward_token"] == pipe.reward_token == trained
    assert report["guidance"] == {"MotionGPT (base)": None, "MotionRL (fine-tuned)": trained}
    assert "MotionRL (fine-tuned): equal mix of <mt>, <mm>, <perception>" in (out / "report.md").read_text()


def test_main_job_with_lora_saves_adapters_that_load_merged(tiny_bundle, tmp_path):
    import psutil

    out = tmp_path / "lora"
    # as the README runs it: `accelerate launch` alone exports OMP_NUM_THREADS=1, the job takes every core back
    result = _ppo(
        tiny_bundle, out, "--use_peft", "--lora_r", "4", "--report", "false", launcher=["accelerate", "launch"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and not (out / "gpt").exists()
    assert json.loads((out / "training.json").read_text())["cpu_threads"] == psutil.cpu_count(logical=False)
    from agents.pipeline import load_policy

    merged = load_policy(out)
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_main_job_on_two_processes_keeps_identical_weights(tiny_bundle, tmp_path):
    out = tmp_path / "ddp"
    launcher = ["accelerate", "launch", "--config_file", str(RECIPES.parent / "accelerate_configs" / "cpu.yaml"),
                "--num_processes", "2", "--main_process_port", "29531"]  # fmt: skip
    result = _ppo(tiny_bundle, out, "--report", "false", "--loss_normalization", "front", launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    training = json.loads((out / "training.json").read_text())
    assert training["num_processes"] == 2 and training["steps"] == 4
    assert training["weights_identical_across_processes"]
    from agents.pipeline import load_policy

    base, tuned = load_policy(tiny_bundle), load_policy(out)
    assert any(not torch.equal(a, b) for a, b in zip(base.parameters(), tuned.parameters()))  # an update happened


def test_main_job_errors_name_the_value_and_the_fix(tiny_bundle, tmp_path):
    missing = _ppo(tmp_path / "nowhere", tmp_path / "x")
    assert missing.returncode != 0 and "--model_dir" in missing.stderr and "missing gpt/" in missing.stderr
    token = _ppo(tiny_bundle, tmp_path / "y", "--reward_tokens", "<mt>", "<fast>")
    assert token.returncode != 0 and "unknown reward token '<fast>'" in token.stderr
    sizes = _ppo(tiny_bundle, tmp_path / "z", "--per_device_train_batch_size", "5")
    assert sizes.returncode != 0 and "incompatible batch sizes" in sizes.stderr
    spaces = _ppo(tiny_bundle, tmp_path / "w", "--eval_repetitions", "2", "--eval_reward_spaces", "3")
    assert spaces.returncode != 0 and "--eval_reward_spaces must lie in [0, repetitions=2], got 3" in spaces.stderr
    assert not (tmp_path / "w").exists()  # refused before training, nothing written
    fid = _ppo(tiny_bundle, tmp_path / "v", "--eval_fid_reference", "clips")
    assert fid.returncode != 0 and "--eval_fid_reference must be one of ('full', 'crops'), got 'clips'" in fid.stderr
    if not torch.cuda.is_available():  # a sharding launch config on a machine without GPUs: no silent DDP
        for variable, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
            sharded = _ppo(tiny_bundle, tmp_path / name, env=os.environ | {"WORLD_SIZE": "2", variable: "true"})
            assert sharded.returncode != 0 and f"asks for {name} over 2 processes" in sharded.stderr
            assert "accelerate_configs/cpu.yaml" in sharded.stderr and not (tmp_path / name).exists()
