"""Evaluating a text-to-motion generator with the field's protocol (Guo et al. 2022; SPEC §8).

Every repetition draws one caption per test motion, generates a motion for each, embeds captions,
real and generated motions with the held-out evaluator (never a reward model), and computes
R-precision (batches of 32), FID, MM-Dist and Diversity; MultiModality uses 100 captions × 30
samples. Alongside: perception score (the critic of Eq. 6 on the converter's SMPL rotations),
foot skating and jerk (optionally in the first repetitions only). Results are ``mean ± 1.96·std/√R``
over the repetitions.

Real motions are cropped as the reference evaluator crops them: to a multiple of 4 frames, one
unit shorter a third of the time, from a random start. FID compares each set against the
statistics of all real test motions at full length, fitted once (``fid_reference="full"``); with
``fid_reference="crops"`` each repetition's generated sets are compared with that repetition's real
crops, as T2M-GPT's evaluation pass does, and the real row with a second, independent draw of
crops, as Guo et al.'s ground-truth row is.

Optionally, R-precision and MM-Dist are also measured in the reward encoders' own spaces
(``reward_space_repetitions``), next to the held-out evaluator's on the same R-precision batches.
A fine-tune that gains much more in the spaces it was rewarded in than in the evaluator's has
learned the reward models' quirks rather than the text: the check for reward over-optimisation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from motion_env.datasets import UNIT_LENGTH, load_humanml3d
from motion_env.features import features_to_joints, length_batches
from reward_models import metrics
from reward_models.calibrate import batches
from reward_models.encoders import pad_arrays

REAL_ROW = "Real motion"
FID_REFERENCES = ("full", "crops")
EVALUATOR_SPACE = "evaluator"  # the held-out evaluator's embedding space, beside the reward encoders'


@dataclass
class EvaluationSettings:
    """How much evaluation to run; the defaults are the paper's protocol except where noted."""

    repetitions: int = 20
    # Perception, foot skating and jerk (per-motion measurements, not the protocol's) in the first
    # this many repetitions only; None: in all. They cost more than the embeddings and vary less.
    per_motion_repetitions: int | None = None
    # The same for the real-motion row, which changes only by its crops from one repetition to the
    # next; None: as per_motion_repetitions.
    real_per_motion_repetitions: int | None = None
    mm_repetitions: int = 5  # the protocol repeats MultiModality 20 times too; 3000 generations each
    mm_num_texts: int = 100
    mm_num_samples: int = 30
    mm_num_pairs: int = 10
    diversity_pairs: int = 300
    batch_size: int = 32  # R-precision batch (1 true caption + 31 others)
    temperature: float = 1.0
    seed: int = 0
    # R-precision and MM-Dist also in each reward encoder's space, in the first this many repetitions
    # (0: not measured); they never enter the table above, which is the held-out evaluator's alone.
    reward_space_repetitions: int = 0
    # FID's real side: "full", every real test motion at full length, fitted once; or "crops", each
    # repetition's real crops (the reference evaluators'), the real row against an independent draw
    fid_reference: str = "full"


class TestSet:
    """A test split grouped by motion: each motion and the captions that describe it.

    A motion is a whole clip or a captioned span of one (dataset row ``id`` ``<clip>#<start>#<end>``),
    cropped to that span, as the reference evaluator makes each span its own item: a caption that
    describes seconds 3 to 6 of a clip is never paired with the whole clip.
    """

    __test__ = False  # a data class, not a pytest test class

    def __init__(self, data_dir: str | Path, split: str = "test"):
        rows = load_humanml3d(data_dir, split)[:]  # columns, formatted in one pass
        captions, motions = defaultdict(list), {}
        for motion_id, caption, motion in zip(rows["id"], rows["caption"], rows["motion"]):
            captions[motion_id].append(caption)
            if motion_id not in motions:  # the rows of one id share its motion
                motions[motion_id] = np.array(motion)  # a writable copy, not a view of the Arrow table
        self.ids = sorted(motions)
        if not self.ids:
            raise ValueError(f"{data_dir}: split {split!r} has no captioned motion to evaluate on")
        self.captions = [captions[i] for i in self.ids]
        self.motions = [motions[i] for i in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def draw(self, rng: np.random.Generator) -> tuple[list[str], list[np.ndarray]]:
        """One caption per motion and a reference-style crop of each motion, in a shuffled order."""
        order = rng.permutation(len(self))
        captions = [self.captions[i][int(rng.integers(len(self.captions[i])))] for i in order]
        crops = []
        for i in order:
            motion = self.motions[i]
            units = len(motion) // UNIT_LENGTH - (1 if rng.random() < 1 / 3 else 0)
            length = max(units, 1) * UNIT_LENGTH
            start = int(rng.integers(0, len(motion) - length + 1))
            crops.append(motion[start : start + length])
        return captions, crops


def check_held_out(evaluator, scorer) -> None:
    """Raise unless ``evaluator`` is held out from ``scorer``'s reward encoders (SPEC §8).

    Evaluating with a reward model would measure how well the RL exploited it, not the motion: the
    evaluator may be neither one of the scorer's encoders nor a copy of one's weights.
    """
    mine = evaluator.state_dict()
    for family, encoder in getattr(scorer, "encoders", {}).items():
        theirs = encoder.state_dict()
        same = encoder is evaluator or (
            mine.keys() == theirs.keys()
            and all(mine[k].shape == theirs[k].shape and torch.equal(mine[k].cpu(), theirs[k].cpu()) for k in mine)
        )
        if same:
            raise ValueError(
                f"the evaluator has the weights of the reward scorer's {family!r} encoder: evaluate with an "
                "encoder held out from the rewards (a bundle's evaluator/ directory), never with a reward model"
            )


class MotionJudge:
    """Embeds with the evaluator and scores perception; what the metrics are computed from."""

    def __init__(self, evaluator, converter=None, critic=None, batch_size: int = 64):
        self.evaluator, self.converter, self.critic, self.batch_size = evaluator, converter, critic, batch_size

    @torch.no_grad()
    def texts(self, captions: list[str], encoder=None) -> np.ndarray:
        """Embeddings ``(B, D)`` of captions by the evaluator, or by ``encoder`` when given."""
        encoder = self.evaluator if encoder is None else encoder
        return np.concatenate([encoder.embed_texts(captions[s]).float().cpu().numpy()
                               for s in batches(len(captions), self.batch_size)])  # fmt: skip

    @torch.no_grad()
    def motion_embeddings(self, encoder, features: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
        """Embeddings ``(B, D)`` of motions by ``encoder`` (any with the evaluator's ``embed_motions``), in
        input order, batched by length as in `motions`."""
        rows_of_batches, inverse = length_batches(lengths, self.batch_size)
        parts = []
        for rows in rows_of_batches:
            n = lengths[rows]
            parts.append(encoder.embed_motions(features[rows, : int(n.max())], n).float().cpu().numpy())
        return np.concatenate(parts)[inverse.cpu().numpy()]

    @torch.no_grad()
    def motions(
        self, features: torch.Tensor, lengths: torch.Tensor, embeddings_only: bool = False
    ) -> dict[str, np.ndarray]:
        """Evaluator embeddings ``(B, D)`` and per-motion perception, skating and jerk ``(B,)``, in input order.

        Motions are batched by length (every model here reads a row's valid frames only), so a
        batch is cut to lengths near its own instead of the longest motion's.
        """
        if embeddings_only:
            return {"embedding": self.motion_embeddings(self.evaluator, features, lengths)}
        rows_of_batches, inverse = length_batches(lengths, self.batch_size)
        out = defaultdict(list)
        for rows in rows_of_batches:
            n = lengths[rows]
            f = features[rows, : int(n.max())]
            out["embedding"].append(self.evaluator.embed_motions(f, n).float().cpu().numpy())
            joints = features_to_joints(f)
            if self.critic is not None:
                out["perception"].append(self.critic.score(self.converter.convert(joints, n), n).float().cpu().numpy())
            out["foot_skating"].append(metrics.foot_skating_ratio(joints, n).cpu().numpy())
            out["jerk"].append(metrics.jerk(joints, n).cpu().numpy())
        inverse = inverse.cpu().numpy()
        return {k: np.concatenate(v)[inverse] for k, v in out.items()}


def _set_metrics(text_emb, motion_emb, real_reference, per_motion, settings, rng) -> dict[str, float]:
    values = metrics.evaluate_embeddings(text_emb, motion_emb, real_reference, generator=rng,
                                         batch_size=settings.batch_size, diversity_pairs=settings.diversity_pairs)  # fmt: skip
    for key in ("foot_skating", "jerk", "perception"):
        if key in per_motion:
            values[key] = float(per_motion[key].mean())
    return values


def _space_metrics(text_emb, motion_emb, settings: EvaluationSettings, rep: int) -> dict[str, float]:
    """R-precision and MM-Dist in one encoder's space; the batches depend on the repetition only (paired)."""
    rng = np.random.default_rng([settings.seed, rep, 2])  # a stream of its own: the protocol's stay as they are
    top = metrics.r_precision(text_emb, motion_emb, batch_size=settings.batch_size, generator=rng)
    return {"top1": float(top[0]), "top2": float(top[1]), "top3": float(top[2]),
            "mm_dist": metrics.mm_dist(text_emb, motion_emb)}  # fmt: skip


def evaluate(generators: dict, judge: MotionJudge, test_set: TestSet, settings: EvaluationSettings | None = None,
             progress: bool = True, reward_encoders: dict | None = None) -> dict:  # fmt: skip
    """Table-1 rows for real motion and for each generator (``{name: pipeline}``).

    Returns ``{"rows": {name: {metric: (mean, ci95)}}, "repetitions": {name: {metric: [value per
    repetition]}}, "settings": {...}, "num_motions": N}``; generators' repetitions are paired (the same
    captions, R-precision batches and diversity pairs in repetition r).

    With ``settings.reward_space_repetitions`` > 0, ``reward_encoders`` (``{name: encoder}``, e.g. a
    ``RewardScorer``'s ``encoders``) also embed each of those repetitions, and the result has
    ``"reward_spaces": {"spaces": [...], "repetitions": {row: {space: {metric: [...]}}}, "rows": {row:
    {space: {metric: (mean, ci95)}}}}`` with top-1..3 and MM-Dist in ``"evaluator"`` (the held-out one)
    and in each reward encoder's space, all on the same R-precision batches.
    """
    settings = settings or EvaluationSettings()
    for name in ("per_motion_repetitions", "real_per_motion_repetitions"):
        if getattr(settings, name) is not None and getattr(settings, name) < 1:
            raise ValueError(f"{name} must be >= 1 or None, got {getattr(settings, name)}")
    if settings.fid_reference not in FID_REFERENCES:
        raise ValueError(f"fid_reference must be one of {FID_REFERENCES}, got {settings.fid_reference!r}")
    if settings.reward_space_repetitions < 0:
        raise ValueError(f"reward_space_repetitions must be >= 0, got {settings.reward_space_repetitions}")
    if settings.reward_space_repetitions and not reward_encoders:
        raise ValueError("reward_space_repetitions > 0 needs reward_encoders ({name: encoder}) to measure in")
    if reward_encoders and EVALUATOR_SPACE in reward_encoders:
        raise ValueError(
            f"a reward encoder may not be named {EVALUATOR_SPACE!r}: that is the held-out evaluator's space"
        )
    real_per_motion_repetitions = settings.real_per_motion_repetitions or settings.per_motion_repetitions
    real_reference = None
    if settings.fid_reference == "full":
        full_features, full_lengths = pad_arrays(test_set.motions)
        real_emb = judge.motions(full_features, full_lengths, embeddings_only=True)["embedding"]
        real_reference = metrics.FrechetReference.fit(real_emb)  # FID's reference set, fitted once
    per_rep = defaultdict(lambda: defaultdict(list))
    per_space = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))  # row -> space -> metric -> values
    bar = tqdm(total=settings.repetitions * (1 + len(generators)), desc="evaluating", disable=not progress)
    for rep in range(settings.repetitions):
        rng = np.random.default_rng([settings.seed, rep])
        captions, crops = test_set.draw(rng)
        text_emb = judge.texts(captions)
        features, lengths = pad_arrays(crops)
        per_motion = settings.per_motion_repetitions is None or rep < settings.per_motion_repetitions
        real_per_motion = real_per_motion_repetitions is None or rep < real_per_motion_repetitions
        spaces = {}  # space -> text embeddings of this repetition's captions
        if rep < settings.reward_space_repetitions:
            spaces = {EVALUATOR_SPACE: text_emb}
            spaces.update({name: judge.texts(captions, encoder) for name, encoder in reward_encoders.items()})

        def measure_spaces(row: str, motion_features, motion_lengths, evaluator_emb) -> None:
            for space, space_text_emb in spaces.items():
                emb = evaluator_emb if space == EVALUATOR_SPACE else judge.motion_embeddings(
                    reward_encoders[space], motion_features, motion_lengths)  # fmt: skip
                for key, value in _space_metrics(space_text_emb, emb, settings, rep).items():
                    per_space[row][space][key].append(value)

        real = judge.motions(features, lengths, embeddings_only=not real_per_motion)
        reference = real_row_reference = real_reference
        if settings.fid_reference == "crops":
            reference = metrics.FrechetReference.fit(real["embedding"])
            _, other_crops = test_set.draw(np.random.default_rng([settings.seed, rep, 3]))
            other = judge.motions(*pad_arrays(other_crops), embeddings_only=True)["embedding"]
            real_row_reference = metrics.FrechetReference.fit(other)
        for key, value in _set_metrics(text_emb, real["embedding"], real_row_reference, real, settings, rng).items():
            per_rep[REAL_ROW][key].append(value)
        measure_spaces(REAL_ROW, features, lengths, real["embedding"])
        bar.update()
        for name, pipeline in generators.items():
            # every generator gets the same stream: same R-precision batches and diversity pairs (paired rows)
            generator_rng = np.random.default_rng([settings.seed, rep, 1])
            sample = pipeline(captions, temperature=settings.temperature, seed=settings.seed * 1000 + rep)
            generated = judge.motions(sample.features, sample.lengths, embeddings_only=not per_motion)
            for key, value in _set_metrics(
                text_emb, generated["embedding"], reference, generated, settings, generator_rng
            ).items():
                per_rep[name][key].append(value)
            measure_spaces(name, sample.features, sample.lengths, generated["embedding"])
            bar.update()
    bar.close()

    mm_rng = np.random.default_rng([settings.seed, 10_000])
    mm_captions = [test_set.captions[i][0] for i in mm_rng.permutation(len(test_set))[: settings.mm_num_texts]]
    for name, pipeline in generators.items():
        for rep in tqdm(range(settings.mm_repetitions), desc=f"multimodality ({name})", disable=not progress):
            sample = pipeline(mm_captions, num_samples=settings.mm_num_samples, temperature=settings.temperature,
                              seed=settings.seed * 1000 + 500 + rep)  # fmt: skip
            emb = judge.motions(sample.features, sample.lengths, embeddings_only=True)["embedding"]
            emb = emb.reshape(len(mm_captions), settings.mm_num_samples, -1)
            per_rep[name]["multimodality"].append(
                float(metrics.multimodality(emb, num_pairs=settings.mm_num_pairs, generator=mm_rng))
            )
    rows = {name: {key: metrics.summarize(values) for key, values in row.items()} for name, row in per_rep.items()}
    repetitions = {name: {key: list(values) for key, values in row.items()} for name, row in per_rep.items()}
    result = {"rows": rows, "repetitions": repetitions, "settings": asdict(settings), "num_motions": len(test_set)}
    if per_space:
        result["reward_spaces"] = {
            "spaces": [EVALUATOR_SPACE, *reward_encoders],
            "repetitions": {row: {space: {key: list(values) for key, values in cells.items()}
                                  for space, cells in by_space.items()} for row, by_space in per_space.items()},
            "rows": {row: {space: {key: metrics.summarize(values) for key, values in cells.items()}
                           for space, cells in by_space.items()} for row, by_space in per_space.items()},
        }  # fmt: skip
    return result


def reward_space_table(reward_spaces: dict, metric: str = "top1", baseline: str | None = None) -> str:
    """``evaluate``'s ``"reward_spaces"`` as Markdown: ``metric`` per row and encoder space, and with
    ``baseline`` (a row name) each other generator's paired difference from it in every space."""
    spaces, rows = reward_spaces["spaces"], reward_spaces["rows"]
    header = [
        "Method",
        *[f"{space} (held out)" if space == EVALUATOR_SPACE else f"{space} (reward)" for space in spaces],
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, cells in rows.items():
        values = [f"{cells[space][metric][0]:.3f} ±{cells[space][metric][1]:.3f}" for space in spaces]
        lines.append("| " + " | ".join([row, *values]) + " |")
    if baseline is not None:
        repetitions = reward_spaces["repetitions"]
        for row in repetitions:
            if row in (baseline, REAL_ROW):
                continue
            cells = []
            for space in spaces:
                mean, half = metrics.paired_difference(
                    repetitions[baseline][space][metric], repetitions[row][space][metric]
                )
                cells.append(f"{space} {mean:+.4f} ±{half:.4f}")
            lines.append(f"\n{row} − {baseline}, paired: " + ", ".join(cells))
    return "\n".join(lines)
