"""Clips and random training windows for the motion tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from motion_env.datasets import HUMANML3D, DatasetSpec, read_motion, read_split


def load_clips(root: str | Path, split: str, spec: DatasetSpec = HUMANML3D, min_length: int | None = None) -> list:
    """Every clip of a split once (not once per caption), as raw ``(T, D)`` float32 features.

    Clips outside the dataset's length rule are skipped, as the caption loader skips them.
    """
    root = Path(root)
    min_length = spec.min_length if min_length is None else min_length
    clips = []
    for clip_id in read_split(root, split):
        path = root / "new_joint_vecs" / f"{clip_id}.npy"
        if not path.is_file():
            continue
        motion = read_motion(path, spec)
        if min_length <= len(motion) < 200:
            clips.append(motion)
    if not clips:
        raise ValueError(f"{root}: split {split!r} has no clip of {min_length}-199 frames")
    return clips


class WindowCollator:
    """Batches of random fixed-length windows from whole clips, normalised.

    Clips shorter than ``window`` are taken whole (cropped to a multiple of ``unit``) and padded
    with zeros; ``lengths`` says how many frames of each row are real.

    Returns ``{"features": (B, window, D) float, "lengths": (B,) long}``.
    """

    def __init__(self, normalize, window: int = 64, unit: int = 4, seed: int = 0):
        if window % unit:
            raise ValueError(f"window must be a multiple of {unit}, got {window}")
        self.normalize, self.window, self.unit = normalize, window, unit
        self.rng = np.random.default_rng(seed)

    def __call__(self, clips: list[np.ndarray]) -> dict[str, torch.Tensor]:
        batch = np.zeros((len(clips), self.window, clips[0].shape[-1]), dtype=np.float32)
        lengths = np.zeros(len(clips), dtype=np.int64)
        for i, clip in enumerate(clips):
            if len(clip) >= self.window:
                start = int(self.rng.integers(0, len(clip) - self.window + 1))
                piece = clip[start : start + self.window]
            else:
                piece = clip[: len(clip) // self.unit * self.unit]
            batch[i, : len(piece)] = self.normalize(piece)
            lengths[i] = len(piece)
        return {"features": torch.from_numpy(batch), "lengths": torch.from_numpy(lengths)}
