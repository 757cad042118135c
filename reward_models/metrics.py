"""Evaluation metrics of text-to-motion generation (Guo et al. 2022, as T2M-GPT and MoMask run them).

The embedding metrics work on evaluator embeddings ``(N, D)`` in matching order: row ``i`` of the
text embeddings describes row ``i`` of the motion embeddings. They compute in float64 numpy, as the
reference does, and take torch tensors or numpy arrays. Random draws come from a
``np.random.Generator`` (or an int seed); the reference draws the same way with ``np.random.choice``.

The physical metrics (foot skating, jerk) live in :mod:`reward_models.physics` and are re-exported.
A run of the protocol repeats the per-repetition metrics (:func:`run_repetitions`) and prints them
as Table 1 (:func:`evaluation_table`)::

    def once(seed):
        features, lengths, joints = generate(captions, seed)  # the model under test
        gen_text, gen_motion = embed_pairs(evaluator, captions, features, lengths)
        _, real_motion = embed_pairs(evaluator, captions, real_features, real_lengths)
        metrics = evaluate_embeddings(gen_text, gen_motion, real_motion, generator=seed)
        return metrics | physical_metrics(joints, lengths) | {"perception": float(critic_scores.mean())}

    print(evaluation_table({"Model": run_repetitions(once, 20)}))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from reward_models.physics import foot_skating_ratio, jerk

__all__ = [
    "COLUMNS", "FrechetReference", "activation_statistics", "diversity", "embed_pairs", "euclidean_distance_matrix",
    "evaluate_embeddings", "evaluation_table", "fid", "foot_skating_ratio", "frechet_distance", "jerk",
    "matching_score", "mm_dist", "multimodality", "physical_metrics", "r_precision", "run_repetitions",
    "summarize",
]  # fmt: skip

# Table 1's columns: metric key (as returned by the functions below) -> header.
COLUMNS = {
    "top1": "R-prec. top-1",
    "top2": "top-2",
    "top3": "top-3",
    "fid": "FID",
    "mm_dist": "MM-Dist",
    "diversity": "Diversity",
    "multimodality": "MModality",
    "perception": "Perception",
    "foot_skating": "Foot skating",
    "jerk": "Jerk (m/s³)",
}

Generator = np.random.Generator | int | None


def _array(name: str, value, ndim: int) -> np.ndarray:
    """``value`` as a float64 array of ``ndim`` dimensions with finite entries, or a ValueError."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    value = np.asarray(value, dtype=np.float64)
    if value.ndim != ndim or 0 in value.shape:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array, got shape {value.shape}")
    if not np.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return value


def _rng(generator: Generator) -> np.random.Generator:
    return generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)


def _pairs(text_emb, motion_emb) -> tuple[np.ndarray, np.ndarray]:
    text_emb, motion_emb = _array("text_emb", text_emb, 2), _array("motion_emb", motion_emb, 2)
    if text_emb.shape != motion_emb.shape:
        raise ValueError(f"text_emb {text_emb.shape} and motion_emb {motion_emb.shape} must be matching pairs")
    return text_emb, motion_emb


def euclidean_distance_matrix(a, b) -> np.ndarray:
    """Distances ``dist[..., i, j] = ‖a[..., i] − b[..., j]‖``, shape ``(..., N, M)``.

    ``a`` is ``(..., N, D)`` and ``b`` is ``(..., M, D)`` with broadcastable leading dimensions. The
    differences are formed explicitly (in chunks) rather than through ``‖a‖² + ‖b‖² − 2a·b``: no
    cancellation, no negative square, and equal inputs give bit-equal distances, which the tie
    handling of :func:`r_precision` relies on.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"a (..., N, D) and b (..., M, D) must share D, got shapes {a.shape} and {b.shape}")
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, lead + a.shape[-2:])
    b = np.broadcast_to(b, lead + b.shape[-2:])
    rows = max(1, (1 << 22) // max(1, int(np.prod(lead)) * b.shape[-2] * b.shape[-1]))  # ~32 MB per chunk
    out = np.empty(lead + (a.shape[-2], b.shape[-2]))
    for start in range(0, a.shape[-2], rows):
        diff = a[..., start : start + rows, None, :] - b[..., None, :, :]  # (..., rows, M, D)
        out[..., start : start + rows, :] = np.sqrt(np.einsum("...d,...d->...", diff, diff))
    return out


def r_precision(
    text_emb, motion_emb, *, batch_size: int = 32, top_k: int = 3, generator: Generator = None, query: str = "text"
) -> np.ndarray:
    """Top-1..top-k retrieval accuracy within batches of ``batch_size`` pairs, shape ``(top_k,)``.

    Pairs are cut into consecutive batches (after a joint shuffle when ``generator`` is given, as
    the reference's shuffled loader does); the last incomplete batch is dropped, as the reference's
    ``drop_last`` loader does. ``query="text"`` ranks the batch's motions for each caption, which is
    what Guo's and T2M-GPT's code compute (distance rows are texts) and so what their published
    numbers mean; ``query="motion"`` ranks the captions for each motion. Exact distance ties (a
    generator that collapsed to one output) count as a uniformly random order, so they give chance
    accuracy rather than a perfect score.
    """
    text_emb, motion_emb = _pairs(text_emb, motion_emb)
    if query not in ("text", "motion"):
        raise ValueError(f"query must be 'text' or 'motion', got {query!r}")
    if not 1 <= top_k <= batch_size:
        raise ValueError(f"top_k must lie in [1, batch_size={batch_size}], got {top_k}")
    num_batches = len(text_emb) // batch_size
    if num_batches == 0:
        raise ValueError(f"r_precision needs at least batch_size={batch_size} pairs, got {len(text_emb)}")
    order = _rng(generator).permutation(len(text_emb)) if generator is not None else np.arange(len(text_emb))
    order = order[: num_batches * batch_size].reshape(num_batches, batch_size)
    queries, keys = (text_emb, motion_emb) if query == "text" else (motion_emb, text_emb)
    dist = euclidean_distance_matrix(queries[order], keys[order])  # (nb, bs, bs) row = query
    true = np.diagonal(dist, axis1=1, axis2=2)[..., None]  # (nb, bs, 1)
    closer = (dist < true).sum(axis=-1)  # (nb, bs)
    tied = (dist == true).sum(axis=-1) - 1  # (nb, bs) others at exactly the true distance
    k = np.arange(1, top_k + 1)[:, None, None]  # (top_k, 1, 1)
    # P(true item in the top k) when the tied items are put in a random order.
    hit = np.clip((k - closer) / (tied + 1), 0.0, 1.0)  # (top_k, nb, bs)
    return hit.reshape(top_k, -1).mean(axis=1)


def mm_dist(text_emb, motion_emb) -> float:
    """MM-Dist (the reference's "matching score"): mean distance between matched text and motion."""
    text_emb, motion_emb = _pairs(text_emb, motion_emb)
    return float(np.linalg.norm(text_emb - motion_emb, axis=1).mean())


matching_score = mm_dist


def activation_statistics(emb) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of embeddings ``(N, D)``, N >= 2."""
    emb = _array("emb", emb, 2)
    if len(emb) < 2:
        raise ValueError(f"activation_statistics needs at least 2 embeddings for a covariance, got {len(emb)}")
    return emb.mean(axis=0), np.atleast_2d(np.cov(emb, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) between two Gaussians.

    Tr((Σ1Σ2)^½) is the sum of the square roots of the eigenvalues of Σ1Σ2, which are those of the
    symmetric Σ1^½ Σ2 Σ1^½: two symmetric eigendecompositions instead of a general matrix square
    root (about 10× faster at 512 dimensions, and exact also where the product is singular, as it
    is for fewer samples than dimensions). An eigenvalue below zero would make the root imaginary:
    one whose root's imaginary part exceeds 1e-3 is an error, smaller ones are rounding and count as 0.
    """
    return FrechetReference.of(mu1, sigma1).distance(mu2, sigma2)


class FrechetReference:
    """One side of a Fréchet distance, factorised once: ``distance(mu, sigma)`` to other Gaussians.

    An evaluation compares many generated sets with the same real set; this keeps the real set's
    statistics and Σ^½ instead of recomputing them for every FID (the result is the same).
    """

    def __init__(self, mu: np.ndarray, sigma: np.ndarray, root: np.ndarray):
        self.mu, self.sigma, self.root = mu, sigma, root

    @classmethod
    def of(cls, mu, sigma) -> FrechetReference:
        """The reference of a Gaussian with mean ``mu`` ``(D,)`` and covariance ``sigma`` ``(D, D)``."""
        mu, sigma = _array("mu1", np.atleast_1d(mu), 1), _array("sigma1", np.atleast_2d(sigma), 2)
        if sigma.shape != (len(mu), len(mu)):
            raise ValueError(f"mu1 {mu.shape} and sigma1 {sigma.shape} must be (D,) and (D, D)")
        values, vectors = np.linalg.eigh((sigma + sigma.T) / 2)
        return cls(mu, sigma, (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T)  # Σ^½

    @classmethod
    def fit(cls, emb) -> FrechetReference:
        """The reference of the Gaussian fitted to embeddings ``(N, D)`` (FID's real side)."""
        return cls.of(*activation_statistics(_array("real_emb", emb, 2)))

    def distance(self, mu, sigma) -> float:
        """Fréchet distance from this Gaussian to ``N(mu, sigma)``, as :func:`frechet_distance`."""
        mu, sigma = _array("mu2", np.atleast_1d(mu), 1), _array("sigma2", np.atleast_2d(sigma), 2)
        dim = len(self.mu)
        if mu.shape != (dim,) or sigma.shape != (dim, dim):
            raise ValueError(f"mu1 {self.mu.shape}, mu2 {mu.shape}, sigma1 {self.sigma.shape}, sigma2 {sigma.shape} "
                             "must be (D,) and (D, D)")  # fmt: skip
        product = self.root @ sigma @ self.root
        eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
        imaginary = np.sqrt(np.clip(-eigenvalues, 0.0, None))
        if imaginary.max(initial=0.0) > 1e-3:
            raise ValueError(f"sqrt(sigma1 @ sigma2) has an imaginary part of {imaginary.max():.3g}")
        trace_root = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
        diff = self.mu - mu
        return float(diff @ diff + np.trace(self.sigma) + np.trace(sigma) - 2 * trace_root)

    def fid(self, gen_emb) -> float:
        """FID of generated embeddings ``(N, D)`` against this (real) reference."""
        gen_emb = _array("gen_emb", gen_emb, 2)
        if gen_emb.shape[1] != len(self.mu):
            raise ValueError(f"real_emb (N, {len(self.mu)}) and gen_emb {gen_emb.shape} must share the embedding width")
        return self.distance(*activation_statistics(gen_emb))


def fid(real_emb, gen_emb) -> float:
    """FID between the Gaussians fitted to real and generated motion embeddings ``(N, D)``.

    ``real_emb`` may also be a :class:`FrechetReference` fitted to them.
    """
    reference = real_emb if isinstance(real_emb, FrechetReference) else FrechetReference.fit(real_emb)
    return reference.fid(gen_emb)


def diversity(emb, num_pairs: int = 300, generator: Generator = None) -> float:
    """Mean distance between ``emb[first]`` and ``emb[second]`` for two independent index sets.

    Each set is ``rng.choice(N, num_pairs, replace=False)``, drawn first then second, as the
    reference does (a pair may draw the same index twice; it counts with distance 0, as there).
    """
    emb = _array("emb", emb, 2)
    if num_pairs < 1 or len(emb) < num_pairs:
        raise ValueError(f"diversity needs at least num_pairs={num_pairs} >= 1 embeddings, got {len(emb)}")
    rng = _rng(generator)
    first = rng.choice(len(emb), num_pairs, replace=False)
    second = rng.choice(len(emb), num_pairs, replace=False)
    return float(np.linalg.norm(emb[first] - emb[second], axis=1).mean())


def multimodality(emb, num_pairs: int = 10, generator: Generator = None) -> float:
    """Mean distance between pairs of generations for the same text; ``emb`` is ``(texts, samples, D)``.

    Two index sets of ``num_pairs`` samples are drawn as in :func:`diversity` and shared by every
    text, as the reference does.
    """
    emb = _array("emb", emb, 3)
    if num_pairs < 1 or emb.shape[1] < num_pairs:
        raise ValueError(
            f"multimodality needs at least num_pairs={num_pairs} >= 1 samples per text, got {emb.shape[1]}"
        )
    rng = _rng(generator)
    first = rng.choice(emb.shape[1], num_pairs, replace=False)
    second = rng.choice(emb.shape[1], num_pairs, replace=False)
    return float(np.linalg.norm(emb[:, first] - emb[:, second], axis=2).mean())


def summarize(values) -> tuple:
    """Mean and 95% half-interval 1.96·std/√R over R repetitions (axis 0), std with ddof=0.

    This is the reference's ``get_metric_statistics``. Scalars per repetition give floats; arrays
    give arrays.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or len(values) == 0:
        raise ValueError(f"summarize needs a sequence of at least one repetition, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"repetition values contain NaN or Inf: {values.tolist()}")
    mean, ci = values.mean(axis=0), 1.96 * values.std(axis=0) / np.sqrt(len(values))
    return (float(mean), float(ci)) if values.ndim == 1 else (mean, ci)


def paired_difference(base, other) -> tuple[float, float]:
    """Mean and 95% half-interval of ``other - base`` over R paired repetitions (Student t, R-1 dof).

    Paired means each repetition measured both on the same draws (captions, batches, pairs), so
    the draw-to-draw variation both share cancels in the difference. With one repetition the
    half-interval is infinite: a single pair says nothing about noise.
    """
    base, other = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if base.ndim != 1 or base.shape != other.shape or len(base) == 0:
        raise ValueError(f"paired_difference needs two equal-length 1-D sequences, got {base.shape} and {other.shape}")
    if not (np.isfinite(base).all() and np.isfinite(other).all()):
        raise ValueError("paired repetition values contain NaN or Inf")
    difference = other - base
    if len(difference) < 2:
        return float(difference.mean()), math.inf
    from scipy.stats import t

    half = t.ppf(0.975, len(difference) - 1) * difference.std(ddof=1) / math.sqrt(len(difference))
    return float(difference.mean()), float(half)


def run_repetitions(
    evaluate_once: Callable[[int], Mapping[str, float]], repetitions: int = 20, *, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Call ``evaluate_once(seed + r)`` for r = 0..R-1 and summarise each metric (see :func:`summarize`).

    ``evaluate_once`` seeds everything random in one repetition (generation, batching, pair draws)
    from its argument and returns metric name -> value; every repetition must return the same names.
    """
    if repetitions < 1:
        raise ValueError(f"repetitions must be at least 1, got {repetitions}")
    results = [dict(evaluate_once(seed + r)) for r in range(repetitions)]
    names = list(results[0])
    for r, result in enumerate(results):
        if set(result) != set(names):
            raise ValueError(f"repetition {r} returned metrics {sorted(result)}, repetition 0 returned {sorted(names)}")
    return {name: summarize([result[name] for result in results]) for name in names}


@torch.no_grad()
def embed_pairs(evaluator, texts: Sequence[str], features, lengths, *, batch_size: int = 256) -> tuple:
    """Evaluator embeddings of captions and motions, in the order given: ``(N, D)`` float64 arrays each.

    ``evaluator`` has ``embed_texts(list[str]) -> (B, D)`` and ``embed_motions(features (B, T, C),
    lengths (B,)) -> (B, D)``. Each chunk's rows must come back in input order (the reference
    evaluator sorts by length internally; an evaluator must undo that, this cannot check it).
    """
    features, lengths = torch.as_tensor(features), torch.as_tensor(lengths)
    if not (len(texts) == len(features) == len(lengths)) or len(texts) == 0:
        raise ValueError(
            f"texts ({len(texts)}), features ({len(features)}), lengths ({len(lengths)}) must be equal and > 0"
        )
    text_parts, motion_parts = [], []
    for start in range(0, len(texts), batch_size):
        end = min(start + batch_size, len(texts))
        text_parts.append(_array("embed_texts output", evaluator.embed_texts(list(texts[start:end])), 2))
        motion_parts.append(
            _array("embed_motions output", evaluator.embed_motions(features[start:end], lengths[start:end]), 2)
        )
        if len(text_parts[-1]) != end - start or len(motion_parts[-1]) != end - start:
            raise ValueError(
                f"the evaluator returned {len(text_parts[-1])} text and {len(motion_parts[-1])} motion embeddings "
                f"for {end - start} inputs"
            )
    return np.concatenate(text_parts), np.concatenate(motion_parts)


def evaluate_embeddings(
    text_emb,
    motion_emb,
    real_motion_emb,
    *,
    generator: Generator = None,
    batch_size: int = 32,
    diversity_pairs: int = 300,
) -> dict[str, float]:
    """One repetition's embedding metrics: ``top1..top3``, ``mm_dist``, ``fid`` (vs real), ``diversity``.

    ``real_motion_emb`` may be a :class:`FrechetReference` fitted to the real embeddings once.
    """
    rng = _rng(generator)
    top = r_precision(text_emb, motion_emb, batch_size=batch_size, generator=rng)
    return {
        "top1": float(top[0]),
        "top2": float(top[1]),
        "top3": float(top[2]),
        "mm_dist": mm_dist(text_emb, motion_emb),
        "fid": fid(real_motion_emb, motion_emb),
        "diversity": diversity(motion_emb, diversity_pairs, rng),
    }


def physical_metrics(joints, lengths) -> dict[str, float]:
    """Clip means of :func:`foot_skating_ratio` and :func:`jerk` for joints ``(B, T, 22, 3)``."""
    return {
        "foot_skating": float(foot_skating_ratio(joints, lengths).mean()),
        "jerk": float(jerk(joints, lengths).mean()),
    }


def evaluation_table(rows: Mapping[str, Mapping[str, tuple[float, float]]], *, digits: int = 3) -> str:
    """Table 1 as aligned text (also valid Markdown): one row per method, cells ``mean ±ci``, ``-`` if absent.

    ``rows`` maps a method ("Real motion", "Model", ...) to metric key (see :data:`COLUMNS`) -> (mean, ci).
    """
    header = ["Method", *COLUMNS.values()]
    lines = [header]
    for method, cells in rows.items():
        unknown = sorted(set(cells) - set(COLUMNS))
        if unknown:
            raise ValueError(f"row {method!r} has unknown metrics {unknown}; expected keys of {list(COLUMNS)}")
        line = [method]
        for key in COLUMNS:
            if key not in cells or cells[key] is None:
                line.append("-")
                continue
            mean, ci = cells[key]
            line.append(f"{mean:.{digits}f} ±{ci:.{digits}f}")
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(line: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([render(lines[0]), rule, *map(render, lines[1:])])
