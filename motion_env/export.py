"""Export motions to the formats other tools read: BVH and AMASS-style SMPL ``.npz``.

Both take the skeleton's SMPL-style *local* rotations (the root's is global) and the
pelvis position, the same quantities :func:`motion_env.skeleton.forward_kinematics` takes.

* BVH (Blender, MotionBuilder, Maya): lengths in **metres** (Blender imports a 1.7 m figure
  at scale 1), every rotation as intrinsic ``Zrotation Xrotation Yrotation`` Euler angles in
  degrees, the root with ``Xposition Yposition Zposition`` first. :func:`read_bvh` reads these
  files back (and plain single-root BVH files).
* SMPL ``.npz`` with AMASS's key names (``poses``, ``trans``, ``betas``, ``gender``,
  ``mocap_framerate``), written without pickling so ``np.load(allow_pickle=False)`` reads it.

Every writer validates its input (shapes, NaN/Inf, matching frame counts) and writes atomically:
a temporary file in the target directory, then ``os.replace``, so no half-written file is left.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from motion_env.rotations import (
    euler_to_matrix,
    matrix_to_euler,
    matrix_to_quat,
    quat_normalize,
    quat_to_axis_angle,
    quat_to_matrix,
)
from motion_env.skeleton import FPS, JOINT_NAMES, NUM_JOINTS, NUM_SMPL_JOINTS, PARENTS, REST_OFFSETS

BVH_ROTATION_ORDER = "ZXY"  # intrinsic, the conventional BVH channel order
END_SITE_LENGTH = 0.05  # metres an End Site extends a leaf joint's bone
SMPL_GENDERS = ("neutral", "male", "female")
NUM_BETAS = 10
_REQUIRED_NPZ_KEYS = ("poses", "trans", "betas", "gender")
_FRAMERATE_KEYS = ("mocap_framerate", "mocap_frame_rate")  # AMASS SMPL+H / SMPL-X spellings


class BvhMotion(NamedTuple):
    """What :func:`read_bvh` returns; joints are in the file's (depth-first) order."""

    names: list[str]
    parents: np.ndarray  # (J,) int, -1 for the root
    offsets: np.ndarray  # (J, 3) offset of each joint from its parent, file units
    local_quats: np.ndarray  # (T, J, 4) wxyz, relative to the parent (the root's is global)
    root_positions: np.ndarray  # (T, 3) file units
    fps: float


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _as_float_array(x, name: str, caller: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"{caller}: {name} contains NaN or Inf (first at index {tuple(bad.tolist())})")
    return x


def _check_frames(array: np.ndarray, name: str, num_frames: int, caller: str) -> None:
    if array.shape[0] != num_frames:
        raise ValueError(
            f"{caller}: {name} has {array.shape[0]} frames but local rotations have {num_frames} "
            f"(shape {array.shape})"
        )


def _normalized_quats(quats: np.ndarray, name: str, caller: str) -> np.ndarray:
    norms = np.linalg.norm(quats, axis=-1)
    if (norms < 1e-8).any():
        raise ValueError(f"{caller}: {name} has zero-norm quaternions (first at {tuple(np.argwhere(norms < 1e-8)[0])})")
    return quat_normalize(quats)


# ----------------------------------------------------------------------------------------- BVH


def to_bvh(
    local_quats,
    root_positions,
    path: str | os.PathLike,
    *,
    fps: float = FPS,
    offsets=None,
    joint_names: Sequence[str] = JOINT_NAMES,
) -> Path:
    """Write a motion as a BVH file.

    Args:
        local_quats: ``(T, 24, 4)`` or ``(T, 22, 4)`` wxyz rotation of each joint relative to its
            parent (SMPL-style; the root's is global).
        root_positions: ``(T, 3)`` pelvis position in metres.
        path: the ``.bvh`` file to write.
        fps: frames per second (``Frame Time`` is ``1 / fps``).
        offsets: ``(J, 3)`` rest offset of each joint from its parent in metres; the target
            skeleton's T-pose (``REST_OFFSETS``) by default. The root's is written as zero.
        joint_names: names for joints ``0..J-1`` (no whitespace).

    Returns:
        ``path`` as a ``Path``.
    """
    caller = "to_bvh"
    quats = _as_float_array(local_quats, "local_quats", caller)
    if quats.ndim != 3 or quats.shape[1] not in (NUM_JOINTS, NUM_SMPL_JOINTS) or quats.shape[2] != 4:
        raise ValueError(f"{caller}: local_quats must have shape (T, 22 or 24, 4) wxyz, got {quats.shape}")
    num_frames, num_joints = quats.shape[:2]
    if num_frames == 0:
        raise ValueError(f"{caller}: local_quats has no frames (shape {quats.shape})")
    root = _as_float_array(root_positions, "root_positions", caller)
    if root.ndim != 2 or root.shape[1] != 3:
        raise ValueError(f"{caller}: root_positions must have shape (T, 3), got {root.shape}")
    _check_frames(root, "root_positions", num_frames, caller)
    offsets = REST_OFFSETS[:num_joints] if offsets is None else _as_float_array(offsets, "offsets", caller)
    if offsets.shape != (num_joints, 3):
        raise ValueError(
            f"{caller}: offsets must have shape ({num_joints}, 3) to match local_quats, got {offsets.shape}"
        )
    names = _check_joint_names(joint_names, num_joints, caller)
    if not fps > 0:
        raise ValueError(f"{caller}: fps must be positive, got {fps}")

    quats = _normalized_quats(quats, "local_quats", caller)
    euler = matrix_to_euler(quat_to_matrix(quats), BVH_ROTATION_ORDER)  # (T, J, 3) radians
    euler_degrees = np.degrees(np.unwrap(euler, axis=0))  # unwrap: no 360-degree jumps between frames
    order = _depth_first_order(PARENTS[:num_joints])
    motion = np.concatenate([root] + [euler_degrees[:, j] for j in order], axis=1)  # (T, 3 + 3J)

    text = io.StringIO()
    text.write("HIERARCHY\n")
    _write_bvh_joint(text, 0, PARENTS[:num_joints], offsets, names, depth=0)
    text.write(f"MOTION\nFrames: {num_frames}\nFrame Time: {1.0 / fps:.10g}\n")
    np.savetxt(text, motion, fmt="%.6f")
    with atomic_path(path) as tmp:
        tmp.write_text(text.getvalue())
    return Path(path)


def _check_joint_names(joint_names: Sequence[str], num_joints: int, caller: str) -> list[str]:
    names = list(joint_names)[:num_joints]
    if len(names) < num_joints:
        raise ValueError(f"{caller}: joint_names has {len(joint_names)} names, need {num_joints}")
    if len(set(names)) != len(names) or any(not n or any(c.isspace() for c in n) for n in names):
        raise ValueError(f"{caller}: joint_names must be unique, non-empty and without whitespace, got {names}")
    return names


def _children(parents: Sequence[int], joint: int) -> list[int]:
    return [j for j, p in enumerate(parents) if p == joint]


def _depth_first_order(parents: Sequence[int]) -> list[int]:
    """Joint indices in the order a BVH hierarchy lists them (and its MOTION lines hold them)."""
    order, stack = [], [0]
    while stack:
        joint = stack.pop()
        order.append(joint)
        stack.extend(reversed(_children(parents, joint)))
    return order


def _write_bvh_joint(out: io.StringIO, joint: int, parents, offsets: np.ndarray, names, depth: int) -> None:
    pad = "\t" * depth
    rotation_channels = " ".join(f"{axis}rotation" for axis in BVH_ROTATION_ORDER)
    offset = np.zeros(3) if joint == 0 else offsets[joint]
    if joint == 0:
        out.write(f"ROOT {names[joint]}\n{pad}{{\n")
        channels = f"CHANNELS 6 Xposition Yposition Zposition {rotation_channels}"
    else:
        out.write(f"{pad}JOINT {names[joint]}\n{pad}{{\n")
        channels = f"CHANNELS 3 {rotation_channels}"
    out.write(f"{pad}\tOFFSET {_format_vector(offset)}\n{pad}\t{channels}\n")
    children = _children(parents, joint)
    for child in children:
        _write_bvh_joint(out, child, parents, offsets, names, depth + 1)
    if not children:
        end_site = _format_vector(_end_site_offset(offset))
        out.write(f"{pad}\tEnd Site\n{pad}\t{{\n{pad}\t\tOFFSET {end_site}\n{pad}\t}}\n")
    out.write(f"{pad}}}\n")


def _end_site_offset(leaf_offset: np.ndarray) -> np.ndarray:
    """Continue the leaf's bone by ``END_SITE_LENGTH`` (straight up for a degenerate bone)."""
    length = np.linalg.norm(leaf_offset)
    direction = leaf_offset / length if length > 1e-8 else np.array([0.0, 1.0, 0.0])
    return direction * END_SITE_LENGTH


def _format_vector(v: np.ndarray) -> str:
    return " ".join(f"{x:.6f}" for x in v)


def read_bvh(path: str | os.PathLike) -> BvhMotion:
    """Read a single-root BVH file (ours, or a plain standard one).

    Position channels are accepted on the root only; its values are its world position.
    Any rotation channel order is accepted and read as intrinsic Euler angles in degrees.
    Lengths come back in the file's units (metres for files :func:`to_bvh` wrote).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_bvh: no such file {path}")
    tokens = path.read_text().split()
    if not tokens or tokens[0] != "HIERARCHY":
        raise ValueError(f"read_bvh: {path} does not start with HIERARCHY")
    names, parents, offsets, channels, pos = _parse_bvh_hierarchy(tokens, path)
    num_frames, frame_time, values = _parse_bvh_motion(tokens, pos, path)
    num_channels = sum(len(c) for c in channels)
    if values.size != num_frames * num_channels:
        raise ValueError(
            f"read_bvh: {path} declares {num_frames} frames of {num_channels} channels "
            f"but holds {values.size} values"
        )
    values = values.reshape(num_frames, num_channels)

    local_quats = np.tile(np.array([1.0, 0.0, 0.0, 0.0]), (num_frames, len(names), 1))
    root_positions = np.tile(np.asarray(offsets[0], dtype=np.float64), (num_frames, 1))
    column = 0
    for joint, joint_channels in enumerate(channels):
        block = values[:, column : column + len(joint_channels)]  # (T, channels of this joint)
        column += len(joint_channels)
        _check_bvh_channels(joint_channels, joint, names[joint], path)
        rotation = [i for i, c in enumerate(joint_channels) if c.endswith("rotation")]
        for i, c in enumerate(joint_channels):
            if c.endswith("position"):
                root_positions[:, "XYZ".index(c[0])] = block[:, i]
        if rotation:
            order = "".join(joint_channels[i][0] for i in rotation)
            local_quats[:, joint] = matrix_to_quat(euler_to_matrix(np.radians(block[:, rotation]), order))
    return BvhMotion(names, np.array(parents), np.array(offsets), local_quats, root_positions, 1.0 / frame_time)


def _check_bvh_channels(joint_channels: list[str], joint: int, name: str, path: Path) -> None:
    known = {f"{axis}{kind}" for axis in "XYZ" for kind in ("position", "rotation")}
    unknown = [c for c in joint_channels if c not in known]
    if unknown:
        raise ValueError(f"read_bvh: {path}: joint {name!r} has unknown channels {unknown}")
    if joint != 0 and any(c.endswith("position") for c in joint_channels):
        raise ValueError(f"read_bvh: {path}: position channels on joint {name!r} are not supported (root only)")
    rotation_axes = sorted(c[0] for c in joint_channels if c.endswith("rotation"))
    if rotation_axes not in ([], ["X", "Y", "Z"]):
        raise ValueError(
            f"read_bvh: {path}: joint {name!r} needs 0 or 3 distinct rotation channels, got {joint_channels}"
        )


def _parse_bvh_hierarchy(tokens: list[str], path: Path):
    names, parents, offsets, channels = [], [], [], []
    stack: list[int | None] = []  # open joints; None for an End Site
    pending: int | None = None
    i = 1
    while i < len(tokens) and tokens[i] != "MOTION":
        token = tokens[i]
        if token in ("ROOT", "JOINT"):
            if token == "ROOT" and names:
                raise ValueError(f"read_bvh: {path} has more than one ROOT; only single-root files are supported")
            pending = len(names)
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            offsets.append([0.0, 0.0, 0.0])
            channels.append([])
            i += 2
        elif token == "End":
            pending = None
            i += 2  # "End Site"
        elif token == "{":
            stack.append(pending)
            i += 1
        elif token == "}":
            stack.pop()
            i += 1
        elif token == "OFFSET":
            if stack[-1] is not None:
                offsets[stack[-1]] = [float(x) for x in tokens[i + 1 : i + 4]]
            i += 4
        elif token == "CHANNELS":
            count = int(tokens[i + 1])
            channels[stack[-1]] = tokens[i + 2 : i + 2 + count]
            i += 2 + count
        else:
            raise ValueError(f"read_bvh: {path}: unexpected token {token!r} in HIERARCHY")
    if not names or i >= len(tokens):
        raise ValueError(f"read_bvh: {path} has no joints or no MOTION section")
    return names, parents, offsets, channels, i + 1


def _parse_bvh_motion(tokens: list[str], pos: int, path: Path) -> tuple[int, float, np.ndarray]:
    header = tokens[pos : pos + 5]
    if len(header) < 5 or header[0] != "Frames:" or header[2:4] != ["Frame", "Time:"]:
        raise ValueError(f"read_bvh: {path}: MOTION must start with 'Frames: N' and 'Frame Time: dt', got {header}")
    num_frames, frame_time = int(header[1]), float(header[4])
    if frame_time <= 0:
        raise ValueError(f"read_bvh: {path}: Frame Time must be positive, got {frame_time}")
    return num_frames, frame_time, np.array(tokens[pos + 5 :], dtype=np.float64)


# ---------------------------------------------------------------------------------- SMPL .npz


def to_smpl_npz(
    poses,
    trans,
    path: str | os.PathLike,
    *,
    fps: float = FPS,
    betas=None,
    gender: str = "neutral",
) -> Path:
    """Write SMPL parameters with AMASS's key names.

    Args:
        poses: local joint rotations, SMPL order, the root's global: axis-angle ``(T, 24, 3)`` or
            ``(T, 72)``, or wxyz quaternions ``(T, 24, 4)``. 22-joint input (``(T, 22, 3)``,
            ``(T, 66)``, ``(T, 22, 4)``) gets the two hand joints at rest.
        trans: ``(T, 3)`` pelvis position of *our target skeleton*, in metres. With a real SMPL
            body model, SMPL's ``transl`` is this minus the model's rest pelvis ``J0(betas)``.
        path: the ``.npz`` file to write.
        fps: written as ``mocap_framerate``.
        betas: shape coefficients, 1-D; ``NUM_BETAS`` zeros by default.
        gender: one of ``SMPL_GENDERS``.

    Returns:
        ``path`` as a ``Path``. The file holds ``poses`` ``(T, 72)`` float32 axis-angle,
        ``trans`` ``(T, 3)`` float32, ``betas`` float32, ``gender`` (a numpy string) and
        ``mocap_framerate`` (float64 scalar).
    """
    caller = "to_smpl_npz"
    axis_angle = _smpl_axis_angle(_as_float_array(poses, "poses", caller), caller)  # (T, 24, 3)
    trans = _as_float_array(trans, "trans", caller)
    if trans.ndim != 2 or trans.shape[1] != 3:
        raise ValueError(f"{caller}: trans must have shape (T, 3), got {trans.shape}")
    _check_frames(trans, "trans", len(axis_angle), caller)
    betas = np.zeros(NUM_BETAS) if betas is None else _as_float_array(betas, "betas", caller)
    if betas.ndim != 1:
        raise ValueError(f"{caller}: betas must be 1-D, got shape {betas.shape}")
    if gender not in SMPL_GENDERS:
        raise ValueError(f"{caller}: gender must be one of {SMPL_GENDERS}, got {gender!r}")
    if not fps > 0:
        raise ValueError(f"{caller}: fps must be positive, got {fps}")
    arrays = {
        "poses": axis_angle.reshape(len(axis_angle), 3 * NUM_SMPL_JOINTS).astype(np.float32),
        "trans": trans.astype(np.float32),
        "betas": betas.astype(np.float32),
        "gender": np.array(gender),
        "mocap_framerate": np.array(float(fps)),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def _smpl_axis_angle(poses: np.ndarray, caller: str) -> np.ndarray:
    """``(T, 24, 3)`` axis-angle from any accepted pose layout; hands at rest if missing."""
    if poses.ndim == 2 and poses.shape[1] in (3 * NUM_JOINTS, 3 * NUM_SMPL_JOINTS):
        poses = poses.reshape(len(poses), -1, 3)
    if poses.ndim != 3 or poses.shape[1] not in (NUM_JOINTS, NUM_SMPL_JOINTS) or poses.shape[2] not in (3, 4):
        raise ValueError(
            f"{caller}: poses must be axis-angle (T, 24, 3) / (T, 72) or quaternions (T, 24, 4) "
            f"(22 joints also accepted), got {poses.shape}"
        )
    if len(poses) == 0:
        raise ValueError(f"{caller}: poses has no frames (shape {poses.shape})")
    if poses.shape[2] == 4:
        poses = quat_to_axis_angle(_normalized_quats(poses, "poses", caller))
    missing = NUM_SMPL_JOINTS - poses.shape[1]
    return np.concatenate([poses, np.zeros((len(poses), missing, 3))], axis=1)


def read_smpl_npz(path: str | os.PathLike) -> dict:
    """Read an AMASS-style SMPL ``.npz`` (ours or AMASS's own) without unpickling.

    Returns:
        ``{"poses": (T, D) axis-angle, D = 3 x joints >= 66 (72 for ours, 156 for SMPL+H),
        "trans": (T, 3), "betas": (B,), "gender": str, "mocap_framerate": float}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_smpl_npz: no such file {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _REQUIRED_NPZ_KEYS if k not in npz.files]
            framerate_keys = [k for k in _FRAMERATE_KEYS if k in npz.files]
            if missing or not framerate_keys:
                missing += [] if framerate_keys else [_FRAMERATE_KEYS[0]]
                raise ValueError(f"read_smpl_npz: {path} lacks keys {missing} (has {sorted(npz.files)})")
            data = {k: npz[k] for k in _REQUIRED_NPZ_KEYS}
            data["mocap_framerate"] = float(npz[framerate_keys[0]])
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ValueError(f"read_smpl_npz: {path} holds pickled objects, which are not read for safety") from err
        raise
    poses, trans, betas = data["poses"], data["trans"], data["betas"]
    if poses.ndim != 2 or poses.shape[1] % 3 or poses.shape[1] < 3 * NUM_JOINTS:
        raise ValueError(f"read_smpl_npz: {path}: poses must have shape (T, 3 x joints >= 66), got {poses.shape}")
    if trans.shape != (len(poses), 3):
        raise ValueError(
            f"read_smpl_npz: {path}: trans must have shape ({len(poses)}, 3) to match poses, got {trans.shape}"
        )
    if betas.ndim != 1:
        raise ValueError(f"read_smpl_npz: {path}: betas must be 1-D, got shape {betas.shape}")
    data["gender"] = str(data["gender"])
    return data


# ---------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m motion_env.export --data DIR --id ID --out clip.bvh`` (or ``.npz``).

    Exports a clip of a dataset that keeps its rotations (``smpl/<id>.npz``, as the embedded
    default does) to BVH or to an AMASS-style SMPL ``.npz``.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m motion_env.export", description=main.__doc__)
    parser.add_argument("--data", required=True, help="dataset directory with smpl/<id>.npz")
    parser.add_argument("--id", required=True, help="clip id")
    parser.add_argument("--out", required=True, help="output file, .bvh or .npz")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix not in (".bvh", ".npz"):
        parser.error(f"--out must end in .bvh or .npz, got {out.name}")
    try:
        smpl = read_smpl_npz(Path(args.data) / "smpl" / f"{args.id}.npz")
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    out.parent.mkdir(parents=True, exist_ok=True)
    poses = smpl["poses"][:, : 3 * NUM_SMPL_JOINTS].reshape(len(smpl["poses"]), NUM_SMPL_JOINTS, 3)
    if out.suffix == ".bvh":
        from motion_env.rotations import axis_angle_to_quat

        to_bvh(axis_angle_to_quat(poses.astype(np.float64)), smpl["trans"], out, fps=smpl["mocap_framerate"])
    else:
        to_smpl_npz(poses, smpl["trans"], out, fps=smpl["mocap_framerate"], betas=smpl["betas"],
                    gender=smpl["gender"])  # fmt: skip
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
