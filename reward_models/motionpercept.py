"""Read MotionPercept, MotionCritic's human-preference pairs, into our ``rot6d`` convention.

MotionCritic (Wang et al. 2024) releases its pairs as ``.pth`` files written with
``torch.save``: a Python list with one dict per pair, ``{"motion_better": x, "motion_worse": y}``,
each a float tensor ``(60, 25, 3)`` -- 60 frames; per frame the 24 SMPL joint rotations as
axis-angle vectors (SMPL order, the pelvis's global) and, in slot 24, the root location
``(x, y, z)`` in metres. (Their critic reads this 25 x 3 layout directly; the 6D form appears in
MDM's raw samples, ``(25, 6, 60)``, which they turn into axis-angle before packing the pairs.)

What :func:`read_motionpercept` returns is our ``rot6d`` ``(N, 60, 25, 6)``: each axis-angle
becomes a rotation matrix and then our 6D form, the first two *columns* of the matrix
(:func:`motion_env.rotations.matrix_to_cont6d`); slot 24 becomes ``(x, y, z, 0, 0, 0)``. Also
accepted, for files packed from MDM's raw output, are per-pair tensors ``(60, 25, 6)`` in MDM's
(PyTorch3D's) 6D convention, which is the first two *rows* of the matrix: those are read as
rows, i.e. transposed, and rewritten in ours. The root location is kept as stored: MotionPercept's
motions come from MDM's HumanAct12 / UESTC pipelines, whose world frame is the datasets' own.
A leading singleton batch axis on a pair's tensors, ``(1, 60, 25, C)``, is dropped, and a file
holding one dict of stacked tensors ``{"motion_better": (N, 60, 25, C), ...}`` is read too.

Files are opened with ``torch.load(weights_only=True)``, which unpickles tensors, lists, dicts and
numbers only. A file that needs more (numpy arrays, custom classes) is refused with an error that
says so; convert it to plain tensors in a trusted environment first.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import NamedTuple

import torch

from motion_env.rotations import axis_angle_to_matrix, cont6d_to_matrix, matrix_to_cont6d
from motion_env.skeleton import NUM_SMPL_JOINTS

KEYS = ("motion_better", "motion_worse")
FRAMES = 60
SLOTS = NUM_SMPL_JOINTS + 1


class MotionPerceptPairs(NamedTuple):
    """Preference pairs in our ``rot6d`` convention: ``better[i]`` was preferred over ``worse[i]``."""

    better: torch.Tensor  # (N, 60, 25, 6)
    worse: torch.Tensor  # (N, 60, 25, 6)


def _to_rot6d(motion: torch.Tensor) -> torch.Tensor:
    """``(..., 25, 3)`` axis-angle or ``(..., 25, 6)`` row-6D + root -> our ``(..., 25, 6)``."""
    motion = motion.double()
    if motion.shape[-1] == 3:
        matrices = axis_angle_to_matrix(motion[..., :NUM_SMPL_JOINTS, :])  # (..., 24, 3, 3)
    else:
        # Row convention: the two stored 3-vectors are the matrix's first two rows. Gram-Schmidt
        # on them gives the matrix's transpose in our (column) reading.
        matrices = cont6d_to_matrix(motion[..., :NUM_SMPL_JOINTS, :]).transpose(-1, -2)
    root = torch.nn.functional.pad(motion[..., NUM_SMPL_JOINTS, :3], (0, 3))  # (..., 6)
    return torch.cat([matrix_to_cont6d(matrices), root[..., None, :]], dim=-2).float()


def _check_motion(motion, path: Path, where: str, batched: bool) -> torch.Tensor:
    """One motion ``(60, 25, C)`` (a leading axis of 1 is dropped) or, ``batched``, ``(N, 60, 25, C)``."""
    if not isinstance(motion, torch.Tensor):
        # A malformed file is bad data, not a caller's type error: every layout problem is a ValueError.
        raise ValueError(f"{path}: {where} is a {type(motion).__name__}, expected a tensor")  # noqa: TRY004
    if not batched and motion.ndim == 4 and motion.shape[0] == 1:
        motion = motion[0]
    expected = "(N, " if batched else "("
    if motion.ndim != (4 if batched else 3) or motion.shape[-3:] not in ((FRAMES, SLOTS, 3), (FRAMES, SLOTS, 6)):
        raise ValueError(f"{path}: {where} has shape {tuple(motion.shape)}; expected {expected}{FRAMES}, {SLOTS}, 3) "
                         "(24 axis-angle rotations + the root location per frame) "
                         f"or {expected}{FRAMES}, {SLOTS}, 6)")  # fmt: skip
    if not motion.is_floating_point():
        raise ValueError(f"{path}: {where} has dtype {motion.dtype}, expected a floating-point tensor")
    if not torch.isfinite(motion).all():
        raise ValueError(f"{path}: {where} holds NaN or Inf")
    return motion


def read_motionpercept(path: str | Path) -> MotionPerceptPairs:
    """Load a MotionPercept pair file (see the module docstring) as ``rot6d`` pairs.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file needs full unpickling, or its content is not pairs of
            ``(60, 25, 3)`` / ``(60, 25, 6)`` finite tensors under ``motion_better`` / ``motion_worse``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MotionPercept pair file does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused:  # a class or function the weights-only unpickler does not allow
            raise ValueError(f"{path}: this file needs full unpickling (it holds {refused.group(1)}), which is "
                             "refused: it could run arbitrary code. Only tensors, lists, dicts and numbers are "
                             "read; re-save the pairs as plain tensors in a trusted environment."
                             ) from None  # fmt: skip
        raise ValueError(f"{path}: not a readable torch.save file of tensors, lists and dicts") from None
    except (RuntimeError, EOFError) as error:
        raise ValueError(f"{path}: not a readable torch.save file ({error})") from None

    if isinstance(data, dict) and set(KEYS) <= set(data):
        better, worse = (_check_motion(data[key], path, key, batched=True) for key in KEYS)
    elif isinstance(data, (list, tuple)):
        if not data:
            raise ValueError(f"{path}: the pair list is empty")
        better, worse = [], []
        for i, pair in enumerate(data):
            if not isinstance(pair, dict) or not set(KEYS) <= set(pair):
                found = sorted(pair) if isinstance(pair, dict) else type(pair).__name__
                raise ValueError(f"{path}: pair {i} must be a dict with keys {KEYS}, got {found}")
            b, w = (_check_motion(pair[key], path, f"pair {i} {key}", batched=False) for key in KEYS)
            better.append(b)
            worse.append(w)
        better, worse = torch.stack(better), torch.stack(worse)
    else:
        raise ValueError(f"{path}: expected a list of dicts with keys {KEYS} (MotionPercept's layout), "
                         f"got {type(data).__name__}")  # fmt: skip
    if better.shape != worse.shape:
        raise ValueError(f"{path}: motion_better {tuple(better.shape)} and motion_worse {tuple(worse.shape)} differ")
    return MotionPerceptPairs(_to_rot6d(better), _to_rot6d(worse))
