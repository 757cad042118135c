"""HumanML3D-layout loading: T2M-GPT's filtering and cropping, errors that name the file, the collator."""

import os
import re
import shutil

import numpy as np
import pytest
import torch

from motion_env.datasets import (
    HUMANML3D,
    KIT_ML,
    MotionCollator,
    load_humanml3d,
    load_kit_ml,
    load_normalizer,
)
from motion_env.features import Normalizer

WALK = "a person walks forward#a/DET person/NOUN walk/VERB forward/ADV#0.0#0.0"
WAVE = "the person waves#the/DET person/NOUN wave/VERB#0.0#0.0"


def write_layout(root, clips, splits, dim=263):
    """Write ``{id: (num_frames, [caption lines])}`` in the HumanML3D layout; return the features."""
    rng = np.random.default_rng(0)
    (root / "new_joint_vecs").mkdir(parents=True, exist_ok=True)
    (root / "texts").mkdir(exist_ok=True)
    features = {}
    for clip_id, (num_frames, lines) in clips.items():
        features[clip_id] = rng.standard_normal((num_frames, dim)).astype(np.float32)
        np.save(root / "new_joint_vecs" / f"{clip_id}.npy", features[clip_id])
        (root / "texts" / f"{clip_id}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for split, ids in splits.items():
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    np.save(root / "Mean.npy", np.zeros(dim, np.float32))
    np.save(root / "Std.npy", np.ones(dim, np.float32))
    return features


HUMANML3D_CLIPS = {
    "000001": (60, [WALK, WAVE]),
    "M000001": (60, ["a person walks forward#a/DET  person/NOUN walk/VERB forward/ADV#0.0#0.0"]),
    "000002": (
        151,
        [
            "someone jogs#someone/PRON jog/VERB#0.0#0.0",
            "then jumps#then/ADV jump/VERB#1.0#4.0",  # frames [20, 80)
            "too short#too/ADV short/ADJ#0.5#2.0",  # frames [10, 40): 30 < 40, skipped
            "from the start#from/ADP the/DET start/NOUN#nan#3.0",  # NaN start = 0: frames [0, 60)
            "past the end#past/ADP the/DET end/NOUN#5.0#9.0",  # frames [100, 151): 51 -> 48
        ],
    ),
    "000003": (30, [WALK]),  # under 40 frames: dropped
    "000004": (200, [WALK, "a valid span#a/DET#1.0#4.0"]),  # 200 frames: dropped with its spans
    "000005": (199, [WAVE]),  # cut to max_length 196
    "000006": (43, [WALK]),  # cut to 40, a multiple of 4
}

# id, clip_id, first frame, length, caption, tokens, start, end
HUMANML3D_ROWS = [
    ("000001", "000001", 0, 60, "a person walks forward", ["a/DET", "person/NOUN", "walk/VERB", "forward/ADV"], 0, 0),
    ("000001", "000001", 0, 60, "the person waves", ["the/DET", "person/NOUN", "wave/VERB"], 0, 0),
    ("M000001", "M000001", 0, 60, "a person walks forward", ["a/DET", "person/NOUN", "walk/VERB", "forward/ADV"], 0, 0),
    ("000002", "000002", 0, 148, "someone jogs", ["someone/PRON", "jog/VERB"], 0, 0),
    ("000002#1#4", "000002", 20, 60, "then jumps", ["then/ADV", "jump/VERB"], 1.0, 4.0),
    ("000002#0#3", "000002", 0, 60, "from the start", ["from/ADP", "the/DET", "start/NOUN"], 0.0, 3.0),
    ("000002#5#9", "000002", 100, 48, "past the end", ["past/ADP", "the/DET", "end/NOUN"], 5.0, 9.0),
    ("000005", "000005", 0, 196, "the person waves", ["the/DET", "person/NOUN", "wave/VERB"], 0, 0),
    ("000006", "000006", 0, 40, "a person walks forward", ["a/DET", "person/NOUN", "walk/VERB", "forward/ADV"], 0, 0),
]


@pytest.fixture
def humanml3d_root(tmp_path):
    root = tmp_path / "HumanML3D"
    features = write_layout(root, HUMANML3D_CLIPS, {"train": list(HUMANML3D_CLIPS), "test": ["000006"]})
    return root, features


def load(root, split="train", loader=load_humanml3d, **kwargs):
    return loader(root, split, cache_dir=root.parent / "cache", **kwargs)


def assert_rows(dataset, expected, features):
    assert len(dataset) == len(expected)
    for row, (row_id, clip_id, first, length, caption, tokens, start, end) in zip(dataset, expected):
        assert (row["id"], row["clip_id"], row["length"]) == (row_id, clip_id, length)
        assert (row["caption"], row["tokens"], row["start"], row["end"]) == (caption, tokens, start, end)
        assert isinstance(row["motion"], np.ndarray) and row["motion"].dtype == np.float32
        np.testing.assert_array_equal(row["motion"], features[clip_id][first : first + length])


def test_humanml3d_rows_follow_t2m_gpt_rules(humanml3d_root):
    root, features = humanml3d_root
    dataset = load(root)
    assert_rows(dataset, HUMANML3D_ROWS, features)
    assert load(root, "test")["id"] == ["000006"]


def test_length_options_change_the_cut(humanml3d_root):
    root, features = humanml3d_root
    dataset = load(root, min_length=60, max_length=100, unit_length=8)
    assert dataset["id"] == ["000001", "000001", "M000001", "000002", "000002#1#4", "000002#0#3", "000005"]
    assert dataset["length"] == [56, 56, 56, 96, 56, 56, 96]


def test_edited_files_are_not_served_from_the_cache(humanml3d_root):
    root, _ = humanml3d_root
    load(root)
    path = root / "new_joint_vecs" / "000006.npy"
    np.save(path, np.full((43, 263), 7.0, np.float32))
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size: only the mtime differs
    assert (load(root)[-1]["motion"] == 7.0).all()


def test_rows_batch_through_a_dataloader(humanml3d_root):
    root, features = humanml3d_root
    loader = torch.utils.data.DataLoader(load(root), batch_size=4, collate_fn=MotionCollator())
    batch = next(iter(loader))
    assert batch["motion"].shape == (4, 148, 263)
    assert batch["length"].tolist() == [60, 60, 60, 148]
    torch.testing.assert_close(batch["motion"][3], torch.from_numpy(features["000002"][:148]))


def test_kit_ml_crops_at_12_5_fps(tmp_path):
    root = tmp_path / "KIT-ML"
    clips = {
        "00001": (
            100,
            [
                "a man kicks#a/DET man/NOUN kick/VERB#0.0#0.0",
                "he steps back#he/PRON step/VERB back/ADV#1.0#4.0",  # frames [12, 50): 38 -> 36
                "a short step#a/DET short/ADJ step/NOUN#0.3#2.5",  # frames [3, 31): 28
                "too short#too/ADV short/ADJ#0.0#1.5",  # frames [0, 18): 18 < 24, skipped
            ],
        ),
        "00002": (20, ["a man kicks#a/DET man/NOUN kick/VERB#0.0#0.0"]),  # under 24 frames: dropped
    }
    features = write_layout(root, clips, {"train": list(clips)}, dim=251)
    dataset = load(root, loader=load_kit_ml)
    expected = [
        ("00001", "00001", 0, 100, "a man kicks", ["a/DET", "man/NOUN", "kick/VERB"], 0, 0),
        ("00001#1#4", "00001", 12, 36, "he steps back", ["he/PRON", "step/VERB", "back/ADV"], 1.0, 4.0),
        ("00001#0.3#2.5", "00001", 3, 28, "a short step", ["a/DET", "short/ADJ", "step/NOUN"], 0.3, 2.5),
    ]
    assert_rows(dataset, expected, features)
    assert KIT_ML.feature_dim == 251 and HUMANML3D.feature_dim == 263


def test_real_clip_loads(tmp_path, humanml3d_fixture):
    root = tmp_path / "HumanML3D"
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    shutil.copy(humanml3d_fixture / "new_joint_vecs" / "012314.npy", root / "new_joint_vecs")
    for name in ("Mean.npy", "Std.npy"):
        shutil.copy(humanml3d_fixture / name, root)
    (root / "texts" / "012314.txt").write_text(WALK + "\n")
    (root / "test.txt").write_text("012314\n")

    dataset = load(root, "test")
    assert len(dataset) == 1 and dataset[0]["length"] == 168
    source = np.load(humanml3d_fixture / "new_joint_vecs" / "012314.npy")
    np.testing.assert_array_equal(dataset[0]["motion"], source[:168])
    assert load_normalizer(root).mean.shape == (263,)


# ---- bad input ----


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'nowhere'}: dataset root does not exist")):
        load(tmp_path / "nowhere")


def test_empty_root(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'empty'}: dataset root is empty")):
        load(tmp_path / "empty")


def test_missing_split_file(humanml3d_root):
    root, _ = humanml3d_root
    with pytest.raises(FileNotFoundError, match=re.escape(f"{root / 'val.txt'}: split file missing")):
        load(root, "val")


def test_missing_clip_files_are_skipped_with_a_warning(humanml3d_root):
    root, _ = humanml3d_root
    (root / "new_joint_vecs" / "000006.npy").unlink()
    with pytest.warns(UserWarning, match=re.escape(f"{root / 'train.txt'}: skipped 1 of 7 ids")):
        dataset = load(root)
    assert "000006" not in dataset["id"]
    with pytest.raises(FileNotFoundError, match=re.escape(f"{root / 'test.txt'}: none of its 1 ids")):
        load(root, "test")


def test_wrong_feature_width(humanml3d_root):
    root, _ = humanml3d_root
    path = root / "new_joint_vecs" / "000006.npy"
    np.save(path, np.zeros((43, 251), np.float32))
    message = f"{path}: expected humanml3d features of shape (T, 263), got shape (43, 251)"
    with pytest.raises(ValueError, match=re.escape(message)):
        load(root)


def test_non_finite_motion(humanml3d_root):
    root, features = humanml3d_root
    path = root / "new_joint_vecs" / "000006.npy"
    broken = features["000006"].copy()
    broken[5, 3] = np.nan
    np.save(path, broken)
    with pytest.raises(ValueError, match=re.escape(f"{path}: features contain NaN or Inf (frames [5])")):
        load(root)


def test_pickled_motion_is_refused(humanml3d_root):
    root, _ = humanml3d_root
    path = root / "new_joint_vecs" / "000006.npy"
    np.save(path, np.array([{"frames": 43}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=re.escape(f"{path}: expected humanml3d features of shape")):
        load(root)


def test_caption_line_without_four_fields(humanml3d_root):
    root, _ = humanml3d_root
    path = root / "texts" / "000006.txt"
    path.write_text(WALK + "\na person walks#a/DET person/NOUN walk/VERB\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: expected 4 '#'-separated fields")):
        load(root)


def test_unparsable_start(humanml3d_root):
    root, _ = humanml3d_root
    path = root / "texts" / "000006.txt"
    path.write_text("a person walks#a/DET person/NOUN walk/VERB#soon#2.0\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 1: start 'soon' is not a number of seconds")):
        load(root)


def test_normalizer_of_the_wrong_dataset(humanml3d_root):
    root, _ = humanml3d_root
    with pytest.raises(ValueError, match=re.escape(f"{root / 'Mean.npy'}: expected shape (251,) for kit_ml")):
        load_normalizer(root, KIT_ML)


# ---- collator ----


def test_collator_pads_masks_and_normalises():
    rng = np.random.default_rng(1)
    rows = [
        {"id": "a", "motion": rng.standard_normal((5, 263)).astype(np.float32), "caption": "x", "tokens": ["x/X"]},
        {"id": "b", "motion": rng.standard_normal((8, 263)).astype(np.float32), "caption": "y", "tokens": ["y/Y"]},
    ]
    normalizer = Normalizer(np.full(263, 1.0), np.full(263, 2.0))
    batch = MotionCollator(normalizer)(rows)

    assert batch["motion"].shape == (2, 8, 263) and batch["motion"].dtype == torch.float32
    assert batch["length"].tolist() == [5, 8] and batch["length"].dtype == torch.long
    assert batch["mask"].tolist() == [[True] * 5 + [False] * 3, [True] * 8]
    assert (batch["motion"][0, 5:] == 0).all()
    torch.testing.assert_close(batch["motion"][0, :5], torch.from_numpy((rows[0]["motion"] - 1.0) / 2.0))
    assert batch["caption"] == ["x", "y"] and batch["tokens"] == [["x/X"], ["y/Y"]] and batch["id"] == ["a", "b"]


def test_collator_fixed_and_rounded_lengths():
    rows = [{"id": "a", "motion": np.ones((5, 263), np.float32)}, {"id": "b", "motion": np.ones((7, 263), np.float32)}]
    assert MotionCollator(max_length=10)(rows)["motion"].shape == (2, 10, 263)
    assert MotionCollator(pad_to_multiple_of=4)(rows)["mask"].shape == (2, 8)
    with pytest.raises(ValueError, match=r"motion 'b' has 7 frames, more than max_length=6"):
        MotionCollator(max_length=6)(rows)
