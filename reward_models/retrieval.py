"""How well an encoder retrieves: R-precision in batches of 32, as Guo et al. measure it.

For one batch of ``B`` matched (caption, motion) pairs, each caption ranks the batch's motions by
Euclidean distance; top-k is the fraction whose own motion is among the k nearest (1 true + 31
others at B = 32, chance 1/32 for top-1). The reverse direction (each motion ranking captions) is
reported too, and the matching distance (MM-Dist: mean distance of the true pairs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from reward_models.metrics import r_precision


def _group_rows(rows: Iterable[Mapping]) -> tuple[list[np.ndarray], list[list[tuple[str, tuple | None]]]]:
    """Motions (one per row ``id``) and, per motion, its ``(caption, tokens)`` pairs."""
    index: dict[str, int] = {}
    motions: list[np.ndarray] = []
    captions: list[list[tuple[str, tuple | None]]] = []
    for row in rows:
        key = row["id"]
        if key not in index:
            index[key] = len(motions)
            motions.append(np.asarray(row["motion"], dtype=np.float32)[: int(row["length"])])
            captions.append([])
        tokens = row.get("tokens")
        captions[index[key]].append((row["caption"], tuple(tokens) if tokens is not None and len(tokens) else None))
    return motions, captions


@torch.no_grad()
def _embed_motions(encoder, motions: Sequence[np.ndarray], chunk: int) -> torch.Tensor:
    out = []
    for start in range(0, len(motions), chunk):
        part = motions[start : start + chunk]
        lengths = torch.tensor([len(m) for m in part])
        features = torch.zeros(len(part), int(lengths.max()), part[0].shape[-1])
        for i, motion in enumerate(part):
            features[i, : len(motion)] = torch.from_numpy(motion)
        out.append(encoder.embed_motions(features, lengths).float().cpu())
    return torch.cat(out)  # (N, D)


@torch.no_grad()
def _embed_captions(encoder, unique: list[tuple[str, tuple | None]], chunk: int) -> torch.Tensor:
    # A dataset's own word/POS tokens are used where the encoder reads tokens (Guo's evaluator does).
    use_tokens = hasattr(encoder, "embed_tokens") and all(tokens is not None for _, tokens in unique)
    out = []
    for start in range(0, len(unique), chunk):
        part = unique[start : start + chunk]
        if use_tokens:
            out.append(encoder.embed_tokens([list(tokens) for _, tokens in part]).float().cpu())
        else:
            out.append(encoder.embed_texts([caption for caption, _ in part]).float().cpu())
    return torch.cat(out)  # (U, D)


def retrieval_report(
    encoder,
    rows: Iterable[Mapping] | None = None,
    *,
    features=None,
    lengths=None,
    captions: Sequence[str] | None = None,
    batch_size: int = 32,
    repeats: int = 20,
    seed: int = 0,
    top_k: int = 3,
    chunk: int = 128,
) -> dict:
    """R-precision (both directions) and MM-Dist of an encoder on matched captions and motions.

    Give either ``rows`` (dataset rows with ``id, motion, length, caption`` and optionally
    ``tokens``, as :func:`motion_env.datasets.load_humanml3d` yields them: rows sharing an ``id``
    are captions of one motion) or ``features`` ``(N, T, D)`` raw, ``lengths`` ``(N,)`` and one
    caption per motion. Every motion and caption is embedded once (``encoder.embed_motions``,
    ``encoder.embed_texts`` or, with tokens, ``encoder.embed_tokens``). Each of ``repeats`` rounds
    draws one caption per motion, shuffles the motions into batches of ``batch_size`` (the
    remainder is dropped) and averages :func:`reward_models.metrics.r_precision` over the batches.

    Returns a dict with ``text_to_motion_top{k}``, ``motion_to_text_top{k}`` and
    ``matching_distance`` (means over rounds), each with a ``_ci95`` half-width
    (1.96 std / sqrt(repeats)), plus ``num_motions``, ``batch_size``, ``repeats``, ``chance_top1``.
    """
    if (rows is None) == (features is None):
        raise ValueError("give either rows or features/lengths/captions, not both or neither")
    if rows is not None:
        motions, options = _group_rows(rows)
    else:
        features = torch.as_tensor(features)
        lengths = torch.as_tensor(lengths)
        if captions is None or len(captions) != len(features) or lengths.shape != (len(features),):
            raise ValueError(
                f"need one caption and one length per motion: {len(features)} motions, "
                f"{None if captions is None else len(captions)} captions, lengths of shape {tuple(lengths.shape)}"
            )
        motions = [features[i, : int(lengths[i])].float().numpy() for i in range(len(features))]
        options = [[(caption, None)] for caption in captions]
    if len(motions) < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} motions, got {len(motions)}")
    if repeats < 1 or batch_size < 2 or not 1 <= top_k < batch_size:
        raise ValueError(f"need repeats >= 1, batch_size >= 2, 1 <= top_k < batch_size; got {repeats}, "
                         f"{batch_size}, {top_k}")  # fmt: skip

    was_training = encoder.training
    encoder.eval()
    try:
        motion_embeddings = _embed_motions(encoder, motions, chunk)  # (N, D)
        unique = list(dict.fromkeys(option for choices in options for option in choices))
        position = {option: i for i, option in enumerate(unique)}
        text_embeddings = _embed_captions(encoder, unique, chunk)  # (U, D)
    finally:
        encoder.train(was_training)

    rng = np.random.default_rng(seed)
    rounds = []
    for _ in range(repeats):
        chosen = torch.tensor([position[choices[rng.integers(len(choices))]] for choices in options])  # (N,)
        order = torch.from_numpy(rng.permutation(len(motions)))
        kept = order[: len(order) // batch_size * batch_size]  # the remainder is dropped, as the reference does
        text, motion = text_embeddings[chosen[kept]], motion_embeddings[kept]  # (N', D) each, in batch order
        forward = r_precision(text, motion, batch_size=batch_size, top_k=top_k, query="text")
        backward = r_precision(text, motion, batch_size=batch_size, top_k=top_k, query="motion")
        matching = float((text - motion).norm(dim=-1).mean())
        rounds.append(np.concatenate([forward, backward, [matching]]))
    rounds = np.asarray(rounds)  # (repeats, 2 * top_k + 1)
    names = [f"text_to_motion_top{k}" for k in range(1, top_k + 1)]
    names += [f"motion_to_text_top{k}" for k in range(1, top_k + 1)] + ["matching_distance"]
    report = {}
    for name, values in zip(names, rounds.T):
        report[name] = float(values.mean())
        report[f"{name}_ci95"] = float(1.96 * values.std() / np.sqrt(repeats))
    report.update(num_motions=len(motions), batch_size=batch_size, repeats=repeats, chance_top1=1 / batch_size)
    return report
