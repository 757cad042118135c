"""The before/after report of a fine-tuning run: base model against fine-tuned model.

``write_report`` fills one folder:

- ``report.json``: everything below, machine-readable;
- ``report.md``: the same for people, with the figures embedded;
- ``pareto_front.png``: both models' reward vectors and Pareto fronts, projected pairwise;
- ``gifs/<i>_<caption>.gif``: base and fine-tuned motion of one test caption side by side.

Two measurements go in. The evaluation protocol (:func:`agents.evaluation.evaluate`, held-out
evaluator) gives R-precision, FID, MM-Dist, Diversity, perception, foot skating and jerk as
``mean ± ci95`` over repetitions, both models on the same caption draws, R-precision batches and
diversity pairs. The reward vectors are the scorer's normalised
(text adherence, motion quality, perception) of one motion per test caption, the caption's own
test motion as ground truth; per model they give the mean vector, its hypervolume above the
origin, the hypervolume of all samples and the size of their Pareto front.

The verdict compares the fine-tuned model with the base on paired repetitions: per repetition
both models saw the same captions, R-precision batches and diversity pairs, so the verdict rests
on the per-repetition differences (tuned - base), their mean and 95% half-interval (Student t).
Top-1 R-precision and perception count as above the base when the interval of the difference lies
above 0; FID counts as not worse unless that interval lies above 0. The report also states, for
reference, whether the two models' own intervals overlap.
"""

from __future__ import annotations

import copy
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.evaluation import (
    FID_REFERENCES,
    REAL_ROW,
    EvaluationSettings,
    MotionJudge,
    TestSet,
    check_held_out,
    evaluate,
    reward_space_table,
)
from agents.pareto import hypervolume, non_dominated_mask
from agents.plots import CURVE_SMOOTHING, logged_panels, plot_reward_front, plot_training_curves
from motion_env.export import atomic_path
from motion_env.render import render_comparison_gif
from reward_models.metrics import evaluation_table, paired_difference, summarize
from reward_models.rewards import REWARD_NAMES

REPORT_JSON, REPORT_MD, FRONT_PNG, GIF_DIR = "report.json", "report.md", "pareto_front.png", "gifs"
CURVES_PNG = "training_curves.png"


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class ReportSettings:
    """How much measuring the report does; the defaults take a few minutes on a CPU."""

    repetitions: int = _help("Repetitions of the evaluation protocol (the paper's 20).", default=5)
    per_motion_repetitions: int | None = _help(
        "Perception, foot skating and jerk in the first this many repetitions only (None: all).", default=None
    )
    real_per_motion_repetitions: int | None = _help(
        "The same for the real-motion row, whose repetitions differ only by their crops (None: as "
        "per_motion_repetitions).",
        default=None,
    )
    reward_prompts: int = _help(
        "Test captions (one per test motion, seeded) scored for the reward vectors.", default=64
    )
    num_gifs: int = _help("Side-by-side GIFs, of the first reward prompts.", default=4)
    temperature: float = _help("Sampling temperature of both models everywhere in the report.", default=1.0)
    seed: int = _help("Seed of the caption draws and of generation (the same for both models).", default=0)
    batch_size: int = _help("R-precision batch (the protocol's 32).", default=32)
    max_motions: int | None = _help(
        "Evaluate on this many test motions (seeded subset) instead of all; for quick runs. Diversity then uses "
        "at most this many pairs instead of the protocol's 300.",
        default=None,
    )
    fid_reference: str = _help(
        "FID's real side: 'full', every real test motion at full length; 'crops', each repetition's real crops "
        "(T2M-GPT's evaluation), the real row against a second draw.",
        default="full",
    )
    reward_space_repetitions: int = _help(
        "R-precision also in the reward encoders' own spaces, beside the held-out evaluator's, in the first this "
        "many repetitions (0: not measured): how much of the gain in the spaces the RL was rewarded in carries over.",
        default=0,
    )

    def __post_init__(self):
        for name in ("repetitions", "reward_prompts", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ReportSettings.{name} must be >= 1, got {getattr(self, name)}")
        if self.per_motion_repetitions is not None and not 1 <= self.per_motion_repetitions <= self.repetitions:
            raise ValueError(f"ReportSettings.per_motion_repetitions must lie in [1, repetitions={self.repetitions}] "
                             f"or be None, got {self.per_motion_repetitions}")  # fmt: skip
        real = self.real_per_motion_repetitions
        if real is not None and not 1 <= real <= self.repetitions:
            raise ValueError(f"ReportSettings.real_per_motion_repetitions must lie in [1, "
                             f"repetitions={self.repetitions}] or be None, got {real}")  # fmt: skip
        if not 0 <= self.num_gifs <= self.reward_prompts:
            raise ValueError(f"ReportSettings.num_gifs must lie in [0, reward_prompts={self.reward_prompts}], "
                             f"got {self.num_gifs}")  # fmt: skip
        if self.fid_reference not in FID_REFERENCES:
            raise ValueError(
                f"ReportSettings.fid_reference must be one of {FID_REFERENCES}, got {self.fid_reference!r}"
            )
        if not 0 <= self.reward_space_repetitions <= self.repetitions:
            raise ValueError(f"ReportSettings.reward_space_repetitions must lie in [0, repetitions={self.repetitions}], "
                             f"got {self.reward_space_repetitions}")  # fmt: skip
        if self.max_motions is not None and self.max_motions < self.batch_size:
            raise ValueError(f"ReportSettings.max_motions={self.max_motions} is below batch_size={self.batch_size}: "
                             "R-precision needs at least one full batch of motions")  # fmt: skip


def _subset(test_set: TestSet, count: int | None, seed: int) -> TestSet:
    """``count`` motions of the test set (a seeded draw, in the original order); all when None."""
    if count is None or count >= len(test_set):
        return test_set
    keep = np.sort(np.random.default_rng([seed, 1]).choice(len(test_set), count, replace=False))
    subset = copy.copy(test_set)
    subset.ids = [test_set.ids[i] for i in keep]
    subset.captions = [test_set.captions[i] for i in keep]
    subset.motions = [test_set.motions[i] for i in keep]
    return subset


def _reward_prompts(test_set: TestSet, count: int, seed: int) -> tuple[list[str], list[np.ndarray]]:
    """``count`` distinct test motions (at most all), one caption each, and the motion as its ground truth."""
    rng = np.random.default_rng([seed, 2])
    chosen = rng.choice(len(test_set), min(count, len(test_set)), replace=False)
    captions = [test_set.captions[i][int(rng.integers(len(test_set.captions[i])))] for i in chosen]
    return captions, [test_set.motions[i] for i in chosen]


def _reward_summary(rewards: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Mean normalised reward vector with 95% intervals, hypervolumes and front of ``(N, 3)`` rewards."""
    mean, ci = summarize(rewards.double().cpu().numpy())
    front = non_dominated_mask(rewards)
    return {
        "mean": dict(zip(REWARD_NAMES, mean.tolist())),
        "ci95": dict(zip(REWARD_NAMES, ci.tolist())),
        # A single point above the origin: the product of its coordinates, 0 unless all are positive.
        "hypervolume_of_mean": hypervolume(mean[None]),
        "hypervolume_of_samples": hypervolume(rewards),
        "front_size": int(front.sum()),
        "num_samples": len(rewards),
    }, front


def _slug(text: str, max_chars: int = 40) -> str:
    """A short file-name part of a caption: lower-case words joined by '-', cut at a word."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    slug = ""
    for word in words:
        if len(slug) + len(word) + 1 > max_chars:
            break
        slug = f"{slug}-{word}" if slug else word
    return slug or (words[0][:max_chars] if words else "motion")


def _row_cells(row: dict) -> dict:
    return {metric: {"mean": mean, "ci95": ci} for metric, (mean, ci) in row.items()}


def _compare(base: list[float], tuned: list[float], rows: tuple[tuple, tuple], higher_is_better: bool) -> dict:
    """Paired comparison of one metric from its per-repetition values (see the module docstring)."""
    difference, half = paired_difference(base, tuned)
    (base_mean, base_ci), (tuned_mean, tuned_ci) = rows
    out = {
        "base": base_mean, "tuned": tuned_mean, "difference": difference, "difference_ci95": half,
        "repetitions": len(base),
        "intervals_overlap": bool(abs(tuned_mean - base_mean) <= base_ci + tuned_ci),
    }  # fmt: skip
    if higher_is_better:
        out["above"] = bool(difference - half > 0)
    else:
        out["not_worse"] = bool(difference - half <= 0)
    return out


def _verdict(rows: dict, repetitions: dict, base: str, tuned: str) -> dict:
    verdict = {}
    for metric in ("top1", "perception", "fid"):
        pair = (rows[base][metric], rows[tuned][metric])
        verdict[metric] = _compare(repetitions[base][metric], repetitions[tuned][metric], pair, metric != "fid")
    verdict["improved"] = verdict["top1"]["above"] and verdict["perception"]["above"] and verdict["fid"]["not_worse"]
    return verdict


def _render_gifs(out_dir: Path, captions, motions, names, rewards, count: int, progress: bool) -> list[str]:
    """Side-by-side GIFs of the first ``count`` prompts; returns their paths relative to ``out_dir``."""
    (out_dir / GIF_DIR).mkdir(parents=True, exist_ok=True)
    files = []
    for i in tqdm(range(count), desc="gifs", disable=not progress):
        clips = []
        for name, motion, reward in zip(names, motions, rewards):
            label = ", ".join(f"{value:.2f}" for value in reward[i].tolist())
            clips.append((motion.joints[i, : int(motion.lengths[i])].cpu().numpy(), f"{name}: rewards ({label})"))
        relative = f"{GIF_DIR}/{i}_{_slug(captions[i])}.gif"
        render_comparison_gif(clips, out_dir / relative, title=captions[i])
        files.append(relative)
    return files


def _json_value(value):
    """JSON for what a ``training`` summary may hold beyond plain types: numpy/torch numbers, paths."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"report.json cannot hold a {type(value).__name__}: {value!r}")


def _write_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_report(out_dir, *, base, tuned, scorer, evaluator, data_dir, settings: ReportSettings | None = None,
                 training: dict | None = None, log_history: list[dict] | None = None,
                 names: tuple[str, str] = ("MotionGPT (base)", "MotionRL (fine-tuned)"),
                 progress: bool = True) -> dict:  # fmt: skip
    """Measure ``base`` and ``tuned`` (``TextToMotionPipeline``s) and write the report into ``out_dir``.

    Args:
        out_dir: the report's folder (created).
        base, tuned: the models before and after fine-tuning.
        scorer: the ``RewardScorer`` of the reward vectors; its converter and critic give the
            evaluation's perception column.
        evaluator: the held-out evaluation encoder (``reward_models.load_evaluator``).
        data_dir: a HumanML3D-layout dataset; its test split is used.
        settings: how much to measure (``ReportSettings()`` when None).
        training: a summary of the fine-tuning run (steps, wall time, final metrics, ...), reported as given.
        log_history: the run's ``trainer.state.log_history``; its curves go to ``training_curves.png``.
        names: row names of the two models.

    Returns:
        The content of ``report.json``.
    """
    start = time.time()
    settings = settings or ReportSettings()
    names = tuple(names)
    if len(names) != 2 or names[0] == names[1] or REAL_ROW in names:
        raise ValueError(f"names must be two distinct row names other than {REAL_ROW!r}, got {names}")
    check_held_out(evaluator, scorer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    test_set = _subset(TestSet(data_dir, "test"), settings.max_motions, settings.seed)

    # a. the evaluation protocol
    evaluation_settings = EvaluationSettings(
        repetitions=settings.repetitions, per_motion_repetitions=settings.per_motion_repetitions,
        real_per_motion_repetitions=settings.real_per_motion_repetitions,
        mm_repetitions=0, batch_size=settings.batch_size,
        diversity_pairs=min(EvaluationSettings.diversity_pairs, len(test_set)),
        temperature=settings.temperature, seed=settings.seed,
        reward_space_repetitions=settings.reward_space_repetitions, fid_reference=settings.fid_reference,
    )  # fmt: skip
    judge = MotionJudge(evaluator, scorer.converter, scorer.critic)
    # both models see the same captions, R-precision batches and diversity pairs: a paired comparison
    evaluation = evaluate(dict(zip(names, (base, tuned))), judge, test_set, evaluation_settings, progress=progress,
                          reward_encoders=getattr(scorer, "encoders", None))  # fmt: skip
    rows = evaluation["rows"]

    # b. reward vectors: the same captions and seed for both models
    captions, ground_truth = _reward_prompts(test_set, settings.reward_prompts, settings.seed)
    motions, rewards, summaries, fronts = [], [], {}, {}
    for name, pipeline in tqdm(zip(names, (base, tuned)), total=2, desc="reward vectors", disable=not progress):
        motion = pipeline(captions, temperature=settings.temperature, seed=settings.seed)
        reward = scorer(motion.features, motion.lengths, captions, ground_truth).rewards.cpu()  # (N, 3)
        summaries[name], fronts[name] = _reward_summary(reward)
        motions.append(motion)
        rewards.append(reward)

    # c. and d. the figures
    with atomic_path(out_dir / FRONT_PNG) as tmp:
        plot_reward_front({name: (reward.numpy(), fronts[name].numpy()) for name, reward in zip(names, rewards)},
                          tmp, title="Normalised reward vectors, one motion per test caption")  # fmt: skip
    gifs = _render_gifs(out_dir, captions, motions, names, rewards, min(settings.num_gifs, len(captions)), progress)
    curves = None
    if logged_panels(log_history):  # a run too short to log any leaves the figure out, not the report
        with atomic_path(out_dir / CURVES_PNG) as tmp:
            plot_training_curves(log_history, tmp, title=f"{names[1]}: metrics logged during fine-tuning")
        curves = CURVES_PNG

    # e. the report
    report = {
        "models": {"base": names[0], "tuned": names[1]},
        "guidance": {name: getattr(pipeline, "reward_token", None) for name, pipeline in zip(names, (base, tuned))},
        "data_dir": str(data_dir),
        "num_test_motions": len(test_set),
        "evaluation": {
            "rows": {name: _row_cells(row) for name, row in rows.items()},
            "repetitions": evaluation["repetitions"],
            "settings": asdict(evaluation_settings),
            **({"reward_spaces": evaluation["reward_spaces"]} if "reward_spaces" in evaluation else {}),
        },
        "reward_vectors": {
            "reward_names": list(REWARD_NAMES),
            "normalised": True,
            "hypervolume_reference": [0.0] * len(REWARD_NAMES),
            "prompts": captions,
            "models": summaries,
        },
        "verdict": _verdict(rows, evaluation["repetitions"], *names),
        "files": {
            "json": REPORT_JSON,
            "markdown": REPORT_MD,
            "pareto_front": FRONT_PNG,
            "gifs": gifs,
            "training_curves": curves,
        },
        "settings": asdict(settings),
        "training": training,
        "wall_time_s": time.time() - start,
    }
    _write_atomic(out_dir / REPORT_JSON, json.dumps(report, indent=2, default=_json_value) + "\n")
    _write_atomic(out_dir / REPORT_MD, _markdown(report, rows, captions))
    return report


# ---- the Markdown page ------------------------------------------------------------------------


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.4g}"


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _verdict_lines(verdict: dict, base: str, tuned: str) -> list[str]:
    def line(metric: str, label: str) -> str:
        v = verdict[metric]
        numbers = (f"{tuned} {v['tuned']:.4f} vs {base} {v['base']:.4f}; paired difference {v['difference']:+.4f} "
                   f"±{v['difference_ci95']:.4f} over {v['repetitions']} repetitions")  # fmt: skip
        overlap = "overlap" if v["intervals_overlap"] else "do not overlap"
        if "above" in v:
            result = "above the base" if v["above"] else "not above the base beyond noise"
        else:
            result = "not worse than the base" if v["not_worse"] else "worse than the base beyond noise"
        return f"- {label}: {numbers}: **{result}** (the two models' own 95% intervals {overlap})."

    lines = [line("top1", "Top-1 R-precision"), line("perception", "Perception"), line("fid", "FID (lower is better)")]
    overall = "holds" if verdict["improved"] else "does not hold"
    lines.append(f"\nOverall, the claim that fine-tuning raised top-1 R-precision and perception without a worse FID "
                 f"**{overall}**. Above means the 95% interval of the paired difference lies above 0; not worse "
                 "means the interval of the FID difference does not lie above 0.")  # fmt: skip
    return lines


def _per_motion_note(per_motion: int | None, real: int | None, repetitions: int) -> str:
    real = real or per_motion
    per_motion, real = min(per_motion or repetitions, repetitions), min(real or repetitions, repetitions)
    if per_motion == real == repetitions:
        return ""
    if per_motion == real:
        return f" Perception, foot skating and jerk: the first {per_motion} repetitions."
    if per_motion == repetitions:
        return f" Perception, foot skating and jerk of {REAL_ROW.lower()}: the first {real} repetitions."
    return (f" Perception, foot skating and jerk: the first {per_motion} repetitions ({REAL_ROW.lower()}: the first "
            f"{real}).")  # fmt: skip


def _guidance(reward_token) -> str:
    if reward_token is None:
        return "none"
    if isinstance(reward_token, str):
        return reward_token
    if len(set(reward_token.values())) == 1:
        return "equal mix of " + ", ".join(reward_token)
    total = sum(reward_token.values())
    return ", ".join(f"{token} {weight / total:.2f}" for token, weight in reward_token.items())


def _reward_space_lines(report: dict, base: str) -> list[str]:
    spaces = report["evaluation"].get("reward_spaces")
    if spaces is None:
        return []
    count = report["settings"]["reward_space_repetitions"]
    return ["", f"Top-1 R-precision in the held-out evaluator's space and in each reward encoder's own, over the first "
            f"{count} repetitions, every column on the same batches (drawn apart from the table's, so the evaluator "
            "column differs from it a little). A gain in the reward spaces that does not carry over to the "
            "evaluator's is the reward models' quirks learned, not the text:", "",
            reward_space_table(spaces, baseline=base)]  # fmt: skip


def _markdown(report: dict, rows: dict, captions: list[str]) -> str:
    base, tuned = report["models"]["base"], report["models"]["tuned"]
    settings, vectors = report["settings"], report["reward_vectors"]
    evaluation_settings = report["evaluation"]["settings"]
    lines = [
        f"# Fine-tuning report: {tuned} against {base}",
        "",
        "## How this was measured",
        "",
        f"- Test split of `{report['data_dir']}`: {report['num_test_motions']} motions (whole clips and the "
        "captioned spans of clips, each with its own captions).",
        f"- Evaluation protocol with the held-out evaluator: {settings['repetitions']} repetitions, one caption per "
        f"motion each, R-precision in batches of {settings['batch_size']}, Diversity over "
        f"{evaluation_settings['diversity_pairs']} pairs, MultiModality not run; both models on the same caption "
        "draws, batches and pairs; cells are mean ±95% half-interval. FID against "
        + ("each repetition's real crops (the real row: against a second draw of crops)."
           if settings.get("fid_reference") == "crops" else "all real test motions at full length.")
        + _per_motion_note(settings["per_motion_repetitions"], settings.get("real_per_motion_repetitions"),
                           settings["repetitions"]),
        f"- Reward vectors: {len(captions)} test captions, one motion each per model, scored by the reward scorer "
        "(normalised, the caption's test motion as ground truth).",
        "- Reward-token guidance (Eq. 11): "
        + "; ".join(f"{name}: {_guidance(token)}" for name, token in report["guidance"].items()) + ".",
        f"- Sampling temperature {settings['temperature']}, seed {settings['seed']} (the same for both models); "
        f"written in {report['wall_time_s']:.0f} s.",
        "",
        "## Evaluation",
        "",
        evaluation_table(rows),
        "",
        "Higher is better for R-precision and perception, lower for FID, MM-Dist, foot skating and jerk; "
        f"Diversity should be close to the {REAL_ROW.lower()} row. MultiModality is not measured here.",
        *_reward_space_lines(report, base),
        "",
        "## Reward vectors",
        "",
        "| Model | " + " | ".join(name.replace("_", " ") for name in vectors["reward_names"])
        + " | HV of the mean vector | HV of the samples | Pareto front |",
        "|---" * (len(vectors["reward_names"]) + 4) + "|",
    ]  # fmt: skip
    for name, summary in vectors["models"].items():
        cells = [f"{summary['mean'][k]:.3f} ±{summary['ci95'][k]:.3f}" for k in vectors["reward_names"]]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {summary['hypervolume_of_mean']:.4f} | "
                     f"{summary['hypervolume_of_samples']:.4f} | {summary['front_size']} of {summary['num_samples']} |")  # fmt: skip
    lines += [
        "",
        "Means are over the samples, ±1.96·std/√N. HV is the hypervolume above the origin (0, 0, 0) of normalised "
        "rewards: of the mean vector, the volume of the box from the origin to it (the product of its three "
        "coordinates, 0 unless all are positive); of the samples, the volume their union of such boxes covers. "
        "The Pareto front counts the samples no other sample of the same model dominates.",
        "",
        f"![Reward vectors and Pareto fronts]({report['files']['pareto_front']})",
        "",
        "## Verdict",
        "",
        *_verdict_lines(report["verdict"], base, tuned),
    ]
    if report["files"]["gifs"]:
        lines += ["", "## Samples", "", f"Left {base}, right {tuned}; the same caption and seed.", ""]
        for caption, gif in zip(captions, report["files"]["gifs"]):
            lines += [f"**{caption}** ([{gif}]({gif}))", "", f"![{caption}]({gif})", ""]
    if report["training"] or report["files"].get("training_curves"):
        lines += ["", "## Training", ""]
    if report["files"].get("training_curves"):
        lines += ["Logged metrics against the optimizer step: faint as logged, solid a trailing mean of "
                  f"{CURVE_SMOOTHING} logs. Rollout metrics come from training prompts, a few per rollout, so they "
                  "are noisy.", "",
                  f"![Training curves]({report['files']['training_curves']})", ""]  # fmt: skip
    if report["training"]:
        lines += ["| | |", "|---|---|"]
        lines += [f"| {key} | {_number(value)} |" for key, value in _flatten(report["training"]).items()]
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["ReportSettings", "write_report"]
