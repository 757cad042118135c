"""Contact sheets that show what the default models do (written under ``docs/``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from motion_env.features import features_to_joints
from motion_env.procedural import PRIMITIVES
from motion_env.render import contact_sheet


def _distinct_test_clips(data: Path, count: int) -> list[dict]:
    """Single-primitive test clips, one per primitive, in a fixed order."""
    seen, out = set(), []
    for line in (data / "annotations.jsonl").read_text().splitlines():
        clip = json.loads(line)
        described = [s for s in clip["segments"] if s["described"]]
        if clip["split"] == "test" and len(described) == 1 and described[0]["primitive"] not in seen:
            seen.add(described[0]["primitive"])
            out.append({"id": clip["id"], **described[0]})
        if len(out) == count:
            break
    return out


@torch.no_grad()
def reconstruction_sheet(vqvae, data: str | Path, path: str | Path, count: int = 5) -> Path:
    """Rows in pairs: a real test clip, then the tokenizer's reconstruction of it."""
    data = Path(data)
    clips, captions = [], []
    for clip in _distinct_test_clips(data, count):
        features = np.load(data / "new_joint_vecs" / f"{clip['id']}.npy")
        features = torch.from_numpy(features[: len(features) // 4 * 4])[None]
        codes, code_lengths = vqvae.encode(vqvae.normalize(features))
        recon = vqvae.denormalize(vqvae.decode(codes, code_lengths))
        clips += [features_to_joints(features)[0].numpy(), features_to_joints(recon)[0].numpy()]
        captions += [f"original: {clip['primitive']}", f"reconstruction ({codes.shape[1]} codes)"]
    return contact_sheet(clips, path, frames_per_clip=6, captions=captions)


def held_out_prompts(data: str | Path, count: int = 10) -> list[str]:
    """Prompts worded with each primitive's held-out paraphrase, for test clips' parameters."""
    return [f"a person {PRIMITIVES[c['primitive']].phrases(c['params'])[-1]}" for c in _distinct_test_clips(Path(data), count)]


def generated_sheet(pipe, data: str | Path, path: str | Path, count: int = 10, seed: int = 0) -> Path:
    """One generated motion per held-out prompt."""
    prompts = held_out_prompts(data, count)
    motion = pipe(prompts, seed=seed)
    clips = [motion.joints[i, : motion.lengths[i]].numpy() for i in range(len(prompts))]
    return contact_sheet(clips, path, frames_per_clip=6, captions=prompts)
