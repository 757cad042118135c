"""Text-motion datasets in the HumanML3D layout (HumanML3D, KIT-ML) as ``datasets.Dataset``.

A dataset root holds::

    new_joint_vecs/<id>.npy   (T, D) float32 features (D = 263 for HumanML3D, 251 for KIT-ML)
    texts/<id>.txt            one caption per line: ``caption#word/POS word/POS ...#start#end``
    Mean.npy, Std.npy         (D,) feature statistics
    train.txt, val.txt, test.txt, all.txt   one clip id per line (mirrored clips are ``M<id>``)

``start``/``end`` are seconds; both 0.0 (or NaN) means the caption describes the whole clip,
otherwise it describes frames ``[int(start * fps), int(end * fps))``.

Clips are filtered and cropped as T2M-GPT's ``Text2MotionDataset`` does, except that the crop to
a multiple of ``unit_length`` is deterministic (from frame 0) instead of random:

1. a clip of fewer than ``min_length`` or ``MAX_CLIP_FRAMES`` (200) or more frames is skipped;
2. a caption with a time span is kept only if its span passes the same rule;
3. each kept motion is cut to at most ``max_length`` frames, then down to a multiple of
   ``unit_length``.

One row per caption. Rows of one motion (a whole clip or one span of it) share ``id``.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from motion_env.features import CONTACT_THRESHOLD, Normalizer, feature_dim
from motion_env.skeleton import FACE_JOINTS, FEET, FPS, KINEMATIC_CHAIN, NUM_JOINTS

MAX_CLIP_FRAMES = 200  # T2M-GPT drops clips (and caption spans) of this many frames or more
UNIT_LENGTH = 4  # the tokenizer's temporal downsampling; motions are cut to a multiple of it


@dataclass(frozen=True)
class DatasetSpec:
    """What distinguishes one HumanML3D-layout dataset from another.

    The skeleton fields are the settings :func:`motion_env.features.joints_to_features`
    takes, so that features can be computed for either dataset.
    """

    name: str
    num_joints: int
    fps: float
    min_length: int  # frames; shorter clips are dropped
    max_length: int = 196  # frames; longer motions are cut
    kinematic_chain: tuple[tuple[int, ...], ...] = KINEMATIC_CHAIN
    face_joints: tuple[int, int, int, int] = FACE_JOINTS  # r_hip, l_hip, r_shoulder, l_shoulder
    feet: tuple[int, int, int, int] = FEET  # left ankle, left toe, right ankle, right toe
    contact_threshold: float = CONTACT_THRESHOLD

    @property
    def feature_dim(self) -> int:
        return feature_dim(self.num_joints)


HUMANML3D = DatasetSpec(name="humanml3d", num_joints=NUM_JOINTS, fps=FPS, min_length=40)
KIT_ML = DatasetSpec(
    name="kit_ml",
    num_joints=21,
    fps=12.5,
    min_length=24,
    kinematic_chain=((0, 11, 12, 13, 14, 15), (0, 16, 17, 18, 19, 20), (0, 1, 2, 3, 4), (3, 5, 6, 7), (3, 8, 9, 10)),
    face_joints=(11, 16, 5, 8),
    feet=(19, 20, 14, 15),
    contact_threshold=0.05,
)


def dataset_features(spec: DatasetSpec) -> datasets.Features:
    """The columns of a loaded dataset; ``motion`` is ``(length, D)`` float32."""
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "clip_id": datasets.Value("string"),
            "motion": datasets.Array2D(shape=(None, spec.feature_dim), dtype="float32"),
            "length": datasets.Value("int32"),
            "caption": datasets.Value("string"),
            "tokens": datasets.List(datasets.Value("string")),
            "start": datasets.Value("float64"),
            "end": datasets.Value("float64"),
        }
    )


@dataclass(frozen=True)
class _Row:
    id: str
    caption: str
    tokens: tuple[str, ...]
    start: float
    end: float
    first_frame: int
    length: int


@dataclass(frozen=True)
class _Clip:
    clip_id: str
    motion_path: str
    rows: tuple[_Row, ...]


def _check_root(root: Path) -> None:
    if not root.exists():
        raise FileNotFoundError(f"{root}: dataset root does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: dataset root is not a directory")
    if not any(root.iterdir()):
        raise FileNotFoundError(f"{root}: dataset root is empty; expected new_joint_vecs/, texts/ and split files")
    for folder in ("new_joint_vecs", "texts"):
        if not (root / folder).is_dir():
            raise FileNotFoundError(f"{root / folder}: missing; a HumanML3D-layout dataset needs it")


def read_split(root: str | Path, split: str) -> list[str]:
    """Clip ids listed in ``<root>/<split>.txt``, in file order."""
    path = Path(root) / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in Path(root).glob("*.txt"))
        raise FileNotFoundError(f"{path}: split file missing (split files present: {available})")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{path}: split file lists no clip ids")
    return ids


def _parse_seconds(text: str, path: Path, line_number: int, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}, line {line_number}: {field} {text!r} is not a number of seconds") from None
    if math.isnan(value):
        return 0.0  # the reference loader reads NaN as 0.0 (whole clip)
    if math.isinf(value) or value < 0:
        raise ValueError(f"{path}, line {line_number}: {field} {text!r} must be a finite, non-negative time")
    return value


def read_captions(path: str | Path) -> list[tuple[str, list[str], float, float]]:
    """``(caption, tokens, start, end)`` for each line of a ``texts/<id>.txt`` file."""
    path = Path(path)
    captions = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        # Split from the right: the three trailing fields never contain '#', a caption might.
        fields = line.strip().rsplit("#", 3)
        if len(fields) != 4:
            raise ValueError(
                f"{path}, line {line_number}: expected 4 '#'-separated fields "
                f"(caption#tokens#start#end), got {len(fields)}: {line!r}"
            )
        caption, tokens, start, end = fields
        captions.append(
            (
                caption,
                tokens.split(),
                _parse_seconds(start, path, line_number, "start"),
                _parse_seconds(end, path, line_number, "end"),
            )
        )
    return captions


def _check_motion_shape(shape: tuple, dtype: np.dtype, path: Path, spec: DatasetSpec) -> None:
    if len(shape) != 2 or shape[1] != spec.feature_dim:
        raise ValueError(f"{path}: expected {spec.name} features of shape (T, {spec.feature_dim}), got shape {shape}")
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"{path}: expected floating-point features, got dtype {dtype}")


def _motion_header(path: Path, spec: DatasetSpec) -> int:
    """Number of frames in a features file, from its .npy header alone (twice as fast as a memory map)."""
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(file)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(file)
    except (ValueError, OSError) as error:
        raise ValueError(f"{path}: not a readable .npy array ({error})") from None
    _check_motion_shape(shape, dtype, path, spec)
    return shape[0]


def read_motion(path: str | Path, spec: DatasetSpec = HUMANML3D) -> np.ndarray:
    """``(T, D)`` float32 features from a ``new_joint_vecs/<id>.npy`` file, checked for shape and finiteness."""
    path = Path(path)
    try:
        motion = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ValueError(f"{path}: not a readable .npy array ({error})") from None
    _check_motion_shape(motion.shape, motion.dtype, path, spec)
    if not np.isfinite(motion).all():
        bad_frames = np.flatnonzero(~np.isfinite(motion).all(axis=1))
        raise ValueError(f"{path}: features contain NaN or Inf (frames {bad_frames[:10].tolist()})")
    return motion.astype(np.float32, copy=False)


def _keeps(num_frames: int, min_length: int) -> bool:
    return min_length <= num_frames < MAX_CLIP_FRAMES


def _plan_clip(clip_id, motion_path, text_path, spec, min_length, max_length, unit_length) -> _Clip | None:
    """The rows one clip contributes, or None when the whole clip fails the length rule."""
    num_frames = _motion_header(motion_path, spec)
    if not _keeps(num_frames, min_length):
        return None
    rows = []
    for caption, tokens, start, end in read_captions(text_path):
        if start == 0.0 and end == 0.0:
            first_frame, span, row_id = 0, num_frames, clip_id
        else:
            first_frame = int(start * spec.fps)
            span = max(0, min(int(end * spec.fps), num_frames) - first_frame)
            row_id = f"{clip_id}#{start:g}#{end:g}"
            if not _keeps(span, min_length):
                continue
        length = min(span, max_length) // unit_length * unit_length
        rows.append(_Row(row_id, caption, tuple(tokens), start, end, first_frame, length))
    return _Clip(clip_id, str(motion_path), tuple(rows))


def _plan(root: Path, split: str, spec, min_length, max_length, unit_length) -> tuple[list[_Clip], str]:
    """Every row of a split, with a fingerprint that changes when any file it reads changes."""
    ids = read_split(root, split)
    digest = hashlib.sha256(repr((str(root.resolve()), split, spec, min_length, max_length, unit_length)).encode())
    clips, missing = [], []
    for clip_id in ids:
        motion_path = root / "new_joint_vecs" / f"{clip_id}.npy"
        text_path = root / "texts" / f"{clip_id}.txt"
        if not (motion_path.is_file() and text_path.is_file()):
            missing.append(clip_id)
            continue
        clip = _plan_clip(clip_id, motion_path, text_path, spec, min_length, max_length, unit_length)
        if clip is not None and clip.rows:
            clips.append(clip)
            stat = os.stat(motion_path)
            digest.update(repr((clip, stat.st_size, stat.st_mtime_ns)).encode())

    split_path = root / f"{split}.txt"
    if len(missing) == len(ids):
        raise FileNotFoundError(
            f"{split_path}: none of its {len(ids)} ids has both new_joint_vecs/<id>.npy and texts/<id>.txt "
            f"under {root} (first: {missing[:5]})"
        )
    if missing:
        # The reference loader skips these silently; say how many, since a partial download looks like this.
        warnings.warn(
            f"{split_path}: skipped {len(missing)} of {len(ids)} ids without new_joint_vecs/<id>.npy "
            f"or texts/<id>.txt (first: {missing[:5]})",
            stacklevel=3,
        )
    if not clips:
        raise ValueError(
            f"{split_path}: no caption of its {len(ids)} clips is between {min_length} and "
            f"{MAX_CLIP_FRAMES - 1} frames long"
        )
    return clips, digest.hexdigest()


def _generate_rows(clips: list[_Clip], spec: DatasetSpec):
    for clip in clips:
        motion = read_motion(clip.motion_path, spec)
        for row in clip.rows:
            yield {
                "id": row.id,
                "clip_id": clip.clip_id,
                "motion": motion[row.first_frame : row.first_frame + row.length],
                "length": row.length,
                "caption": row.caption,
                "tokens": list(row.tokens),
                "start": row.start,
                "end": row.end,
            }


def _check_lengths(min_length: int, max_length: int, unit_length: int) -> None:
    if unit_length < 1:
        raise ValueError(f"unit_length must be >= 1, got {unit_length}")
    if not unit_length <= min_length <= max_length:
        raise ValueError(
            f"need unit_length <= min_length <= max_length, got {unit_length}, {min_length}, {max_length}"
        )


def load_motion_dataset(
    root: str | Path,
    split: str,
    spec: DatasetSpec,
    *,
    min_length: int | None = None,
    max_length: int | None = None,
    unit_length: int = UNIT_LENGTH,
    num_proc: int | None = None,
    cache_dir: str | Path | None = None,
) -> datasets.Dataset:
    """One split of a HumanML3D-layout dataset, one row per caption (see the module docstring).

    Args:
        root: dataset directory.
        split: name of the split file without ``.txt`` (``train``, ``val``, ``test``, ``all``).
        spec: which dataset (:data:`HUMANML3D`, :data:`KIT_ML`, or your own).
        min_length, max_length: frame limits; ``spec``'s by default.
        unit_length: motions are cut to a multiple of this (the tokenizer's downsampling).
        num_proc: processes for reading the clips. With more than one, an unreadable or
            non-finite clip surfaces as ``datasets.exceptions.DatasetGenerationError`` whose
            chained traceback names the file.
        cache_dir: where ``datasets`` writes the Arrow cache; its default cache otherwise.
            The cache key covers every file read, so edited data is re-read.

    Returns:
        Columns ``id, clip_id, motion, length, caption, tokens, start, end``. ``motion`` is
        formatted as numpy, so ``ds[i]["motion"]`` is a ``(length, D)`` float32 array; the other
        columns come back as python values. ``start == end == 0.0`` marks a whole-clip caption.

    Raises:
        FileNotFoundError: missing or empty root, missing split file, or no id with its files.
        ValueError: a features file of the wrong width or with NaN/Inf, a malformed caption line.
    """
    min_length = spec.min_length if min_length is None else min_length
    max_length = spec.max_length if max_length is None else max_length
    _check_lengths(min_length, max_length, unit_length)
    root = Path(root)
    _check_root(root)
    clips, fingerprint = _plan(root, split, spec, min_length, max_length, unit_length)
    try:
        dataset = datasets.Dataset.from_generator(
            _generate_rows,
            features=dataset_features(spec),
            gen_kwargs={"clips": clips, "spec": spec},
            num_proc=num_proc,
            cache_dir=None if cache_dir is None else str(cache_dir),
            fingerprint=fingerprint,
        )
    except datasets.exceptions.DatasetGenerationError as error:
        # Surface our own message (which names the file) rather than the generic wrapper.
        if isinstance(error.__cause__, (ValueError, OSError)):
            raise error.__cause__ from None
        raise
    dataset.info.description = f"{spec.name} split {split!r} from {root}"
    return dataset.with_format("numpy", columns=["motion"], output_all_columns=True)


def load_humanml3d(
    root: str | Path,
    split: str,
    *,
    min_length: int = HUMANML3D.min_length,
    max_length: int = HUMANML3D.max_length,
    unit_length: int = UNIT_LENGTH,
    num_proc: int | None = None,
    cache_dir: str | Path | None = None,
) -> datasets.Dataset:
    """One split of HumanML3D (22 joints, 263-D, 20 fps); see :func:`load_motion_dataset`."""
    return load_motion_dataset(
        root, split, HUMANML3D, min_length=min_length, max_length=max_length, unit_length=unit_length,
        num_proc=num_proc, cache_dir=cache_dir,
    )  # fmt: skip


def load_kit_ml(
    root: str | Path,
    split: str,
    *,
    min_length: int = KIT_ML.min_length,
    max_length: int = KIT_ML.max_length,
    unit_length: int = UNIT_LENGTH,
    num_proc: int | None = None,
    cache_dir: str | Path | None = None,
) -> datasets.Dataset:
    """One split of KIT-ML (21 joints, 251-D, 12.5 fps); see :func:`load_motion_dataset`."""
    return load_motion_dataset(
        root, split, KIT_ML, min_length=min_length, max_length=max_length, unit_length=unit_length,
        num_proc=num_proc, cache_dir=cache_dir,
    )  # fmt: skip


def load_normalizer(root: str | Path, spec: DatasetSpec = HUMANML3D) -> Normalizer:
    """The dataset's ``Mean.npy``/``Std.npy`` as a :class:`Normalizer`, checked against ``spec``'s width."""
    normalizer = Normalizer.from_dir(root)
    if normalizer.mean.shape != (spec.feature_dim,):
        raise ValueError(
            f"{Path(root) / 'Mean.npy'}: expected shape ({spec.feature_dim},) for {spec.name}, "
            f"got {normalizer.mean.shape}"
        )
    return normalizer


class MotionCollator:
    """Pads a list of dataset rows into a batch for a torch ``DataLoader``.

    Args:
        normalizer: if given, motions are z-scored before padding, so padded frames stay 0.
        max_length: pad every batch to this many frames (a longer motion is an error);
            by default to the longest motion in the batch.
        pad_to_multiple_of: round the padded length up to a multiple of this.

    Returns (from a call): ``motion`` float ``(B, T, D)``, ``length`` long ``(B,)``,
    ``mask`` bool ``(B, T)`` (True on real frames), and ``caption``, ``tokens``, ``id`` as lists
    when the rows have them.
    """

    def __init__(
        self, normalizer: Normalizer | None = None, max_length: int | None = None, pad_to_multiple_of: int | None = None
    ):
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        self.normalizer = normalizer
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of

    def _padded_length(self, lengths: list[int], rows: list[dict]) -> int:
        longest = max(lengths)
        if self.max_length is None:
            target = longest
        elif longest > self.max_length:
            row = rows[lengths.index(longest)]
            raise ValueError(
                f"motion {row.get('id', '')!r} has {longest} frames, more than max_length={self.max_length}"
            )
        else:
            target = self.max_length
        if self.pad_to_multiple_of is not None:
            target = math.ceil(target / self.pad_to_multiple_of) * self.pad_to_multiple_of
        return target

    def __call__(self, rows: list[dict]) -> dict:
        if not rows:
            raise ValueError("cannot collate an empty list of rows")
        motions = [torch.as_tensor(np.asarray(row["motion"], dtype=np.float32)) for row in rows]
        if self.normalizer is not None:
            motions = [self.normalizer.normalize(motion) for motion in motions]
        lengths = [len(motion) for motion in motions]
        num_frames = self._padded_length(lengths, rows)

        batch_motion = motions[0].new_zeros((len(rows), num_frames, motions[0].shape[-1]))  # (B, T, D)
        for i, motion in enumerate(motions):
            batch_motion[i, : len(motion)] = motion
        length = torch.tensor(lengths, dtype=torch.long)  # (B,)
        batch = {
            "motion": batch_motion,
            "length": length,
            "mask": torch.arange(num_frames)[None, :] < length[:, None],  # (B, T)
        }
        for key in ("caption", "tokens", "id"):
            if key in rows[0]:
                batch[key] = [list(row[key]) if key == "tokens" else row[key] for row in rows]
        return batch
