"""Measurements recorded next to the default checkpoints.

Until the evaluator of the reward-model work exists, text adherence is measured by an honest
proxy on the procedural data, whose clips carry ground-truth labels (primitive and side):
a generated motion counts as correct when its nearest real test clip, in a fixed hand-made
motion descriptor space, has the prompt's label. The same nearest-neighbour test on real
motion (leave-one-out) is the reference row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from motion_env.features import features_to_joints


@torch.no_grad()
def tokenizer_report(vqvae, clips: list[np.ndarray], batch_size: int = 32) -> dict:
    """Reconstruction error and codebook use of the tokenizer on raw clips ``(T, D)``.

    Returns MPJPE in mm (global positions, and root-relative), the fraction of codes used,
    and the code perplexity (exp of the entropy of code frequencies).
    """
    vqvae.eval()
    factor = vqvae.config.downsample_factor
    errors, relative_errors, counts = [], [], torch.zeros(vqvae.config.codebook_size)
    for start in range(0, len(clips), batch_size):
        batch = [c[: len(c) // factor * factor] for c in clips[start : start + batch_size]]
        lengths = torch.tensor([len(c) for c in batch])
        padded = torch.zeros(len(batch), int(lengths.max()), batch[0].shape[-1])
        for i, clip in enumerate(batch):
            padded[i, : len(clip)] = torch.from_numpy(clip)
        codes, code_lengths = vqvae.encode(vqvae.normalize(padded), lengths)
        recon = vqvae.denormalize(vqvae.decode(codes, code_lengths))
        joints, recon_joints = features_to_joints(padded), features_to_joints(recon)
        for i, n in enumerate(lengths.tolist()):
            diff = (joints[i, :n] - recon_joints[i, :n]).norm(dim=-1)  # (n, 22)
            errors.append(diff.mean().item())
            rel = (joints[i, :n] - joints[i, :n, :1]) - (recon_joints[i, :n] - recon_joints[i, :n, :1])
            relative_errors.append(rel.norm(dim=-1).mean().item())
            counts += torch.bincount(codes[i, : code_lengths[i]], minlength=vqvae.config.codebook_size).float()
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum().item()
    return {
        "clips": len(clips),
        "mpjpe_mm": 1000 * float(np.mean(errors)),
        "root_relative_mpjpe_mm": 1000 * float(np.mean(relative_errors)),
        "codebook_usage": float((counts > 0).float().mean()),
        "code_perplexity": float(np.exp(entropy)),
    }


def motion_descriptor(joints: np.ndarray) -> np.ndarray:
    """A fixed summary of a motion (T, 22, 3): body shape over time and how the root travels."""
    relative = joints - joints[:, :1] * np.array([1.0, 0.0, 1.0])  # root x/z removed, heights kept
    velocity = np.diff(joints[:, 0, [0, 2]], axis=0) * 20.0
    travel = joints[-1, 0, [0, 2]] - joints[0, 0, [0, 2]]
    return np.concatenate([relative.mean(0).ravel(), relative.std(0).ravel(),
                           np.abs(velocity).mean(0), velocity.std(0), travel, [len(joints) / 20.0]])  # fmt: skip


def single_primitive_clips(root: str | Path, split: str = "test") -> list[dict]:
    """Clips of a procedural dataset that show one described primitive, with a label and caption."""
    root = Path(root)
    out = []
    for line in (root / "annotations.jsonl").read_text().splitlines():
        clip = json.loads(line)
        described = [s for s in clip["segments"] if s["described"]]
        if clip["split"] != split or len(described) != 1:
            continue
        segment = described[0]
        label = segment["primitive"] + (f":{segment['params']['side']}" if "side" in segment["params"] else "")
        captions = [c.split("#")[0] for c in (root / "texts" / f"{clip['id']}.txt").read_text().splitlines()]
        out.append({"id": clip["id"], "label": label, "caption": captions[0]})
    return out


def nearest_neighbour_accuracy(root: str | Path, pipe, num_prompts: int = 100, seed: int = 0,
                               temperature: float = 1.0) -> dict:  # fmt: skip
    """The text-adherence proxy: label accuracy of the nearest real test clip (see module doc)."""
    root = Path(root)
    clips = single_primitive_clips(root)
    gallery = np.stack([motion_descriptor(np.load(root / "new_joints" / f"{c['id']}.npy")) for c in clips])
    mean, std = gallery.mean(0), gallery.std(0) + 1e-6
    gallery = (gallery - mean) / std
    labels = np.array([c["label"] for c in clips])

    distances = np.linalg.norm(gallery[:, None] - gallery[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    real_accuracy = float((labels[distances.argmin(1)] == labels).mean())

    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(clips), size=min(num_prompts, len(clips)), replace=False)
    motion = pipe([clips[i]["caption"] for i in chosen], temperature=temperature, seed=seed)
    generated = np.stack([motion_descriptor(motion.joints[i, : motion.lengths[i]].numpy())
                          for i in range(len(chosen))])  # fmt: skip
    nearest = np.linalg.norm(((generated - mean) / std)[:, None] - gallery[None], axis=-1).argmin(1)
    generated_accuracy = float((labels[nearest] == labels[chosen]).mean())
    return {
        "proxy": "label accuracy of the nearest real test clip in a hand-made motion-descriptor space",
        "gallery_clips": len(clips),
        "prompts": len(chosen),
        "real_motion_accuracy": real_accuracy,
        "generated_accuracy": generated_accuracy,
        "ratio_to_real": generated_accuracy / real_accuracy if real_accuracy > 0 else None,
    }
