"""The embedded default data: does it look like a person, say what it shows, and reproduce?"""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from motion_env.datasets import load_humanml3d
from motion_env.export import read_smpl_npz
from motion_env.features import canonicalize, features_to_joints, joints_to_features
from motion_env.procedural import PRIMITIVES, generate_dataset
from motion_env.procedural.base import Style
from motion_env.procedural.captions import LEXICON, pos_tokens
from motion_env.procedural.compose import synthesize
from motion_env.procedural.dataset import HELD_OUT_PAIRS, sample_sequence
from motion_env.rotations import axis_angle_to_quat
from motion_env.skeleton import BONE_LENGTHS, FPS, JOINT_NAMES, bone_lengths, forward_kinematics

LOCOMOTION = {"walk", "run", "jog_in_place", "turn"}  # planned footsteps: feet cannot slide
FLIGHT = {"run", "jog_in_place", "jump", "hop"}  # both feet leave the ground


def _clip(name, params, style=None):
    return synthesize([(PRIMITIVES[name], params)], style or Style()).joints[:, :22]


def _floor_speed(joints, height=0.003):
    """Horizontal speed (m/s) of foot joints that touch the floor in two consecutive frames."""
    feet = joints[:, [7, 10, 8, 11]]
    on_floor = (feet[1:, :, 1] < height) & (feet[:-1, :, 1] < height)
    speed = np.linalg.norm(feet[1:, :, [0, 2]] - feet[:-1, :, [0, 2]], axis=-1) * FPS
    return speed[on_floor]


@pytest.fixture(scope="module")
def samples():
    """Four random clips of every primitive, with random per-clip style."""
    rng = np.random.default_rng(7)
    return {name: [_clip(name, p.sample(rng), Style.sample(rng)) for _ in range(4)] for name, p in PRIMITIVES.items()}


def test_at_least_twenty_primitives_with_three_paraphrases():
    assert len(PRIMITIVES) >= 20
    rng = np.random.default_rng(0)
    for name, primitive in PRIMITIVES.items():
        phrases = primitive.phrases(primitive.sample(rng))
        assert len(set(phrases)) >= 3, name


def test_bodies_are_rigid_and_on_the_floor(samples):
    expected = np.array([BONE_LENGTHS[j] for j in range(1, 22)])
    for name, clips in samples.items():
        for joints in clips:
            assert np.abs(bone_lengths(joints) - expected).max() < 1e-6, name
            assert joints[..., 1].min() > -1e-6, f"{name}: a joint goes through the floor"
            grounded = np.mean(joints[:, [7, 10, 8, 11], 1].min(-1) < 0.005)
            assert grounded > (0.3 if name in FLIGHT else 0.9), f"{name}: floats ({grounded:.0%} of frames grounded)"


def test_feet_do_not_skate(samples):
    for name, clips in samples.items():
        speed = np.concatenate([_floor_speed(j) for j in clips])
        assert np.median(speed) < 0.01, name
        if name in LOCOMOTION:
            assert speed.max() < 0.05, f"{name}: a planted foot slides at {speed.max():.3f} m/s"
        else:
            assert np.percentile(speed, 90) < 0.15, name


def test_knees_bend_forward_only(samples):
    for name, clips in samples.items():
        for joints in clips:
            for hip, knee, ankle in ((1, 4, 7), (2, 5, 8)):
                thigh, shin = joints[:, knee] - joints[:, hip], joints[:, ankle] - joints[:, knee]
                bend = np.degrees(np.arccos(np.clip((thigh * shin).sum(-1) / np.linalg.norm(thigh, axis=-1)
                                                    / np.linalg.norm(shin, axis=-1), -1, 1)))  # fmt: skip
                assert bend.max() < 150, name
                # The knee sits in front of the hip-ankle line when it bends (seen from the side).
                facing = np.cross(joints[:, 1] - joints[:, 2], [0, 1, 0])
                facing /= np.linalg.norm(facing, axis=-1, keepdims=True)
                offset = ((joints[:, knee] - (joints[:, hip] + joints[:, ankle]) / 2) * -facing).sum(-1)
                assert (offset[bend > 20] < 0.02).all(), f"{name}: a knee bends backward"


def test_sides_and_counts_match_the_caption():
    wave = _clip("wave", {"side": "left", "count": 3})
    assert wave[:, 20, 1].max() > wave[:, 16, 1].max() + 0.1  # left hand above the left shoulder
    assert wave[:, 21, 1].max() < wave[:, 17, 1].max()  # the right hand stays down
    side_to_side = np.diff(np.sign(np.diff(wave[:, 20, 0])))
    assert (side_to_side != 0).sum() >= 2 * 3 - 1  # three full swings

    jumps = _clip("jump", {"count": 3, "mode": "up", "height": 0.3})
    feet = jumps[:, [7, 10, 8, 11], 1].min(-1)
    airborne = feet > 0.05
    assert (np.diff(airborne.astype(int)) == 1).sum() == 3

    squats = _clip("squat", {"count": 2, "depth": 0.4})
    low = squats[:, 0, 1] < squats[0, 0, 1] - 0.2
    assert (np.diff(low.astype(int)) == 1).sum() == 2

    kick = _clip("kick", {"side": "right", "count": 1, "height": 1.2})
    assert kick[:, 8, 1].max() > 0.4 and kick[:, 10, 1].max() < 0.02  # right foot up, left toes down

    forward = _clip("walk", {"steps": 6, "speed": "normal", "direction": "forward", "curve": "straight"})
    backward = _clip("walk", {"steps": 6, "speed": "normal", "direction": "backward", "curve": "straight"})
    assert forward[-1, 0, 2] - forward[0, 0, 2] > 1.5
    assert backward[-1, 0, 2] - backward[0, 0, 2] < -0.8
    left = _clip("step_sideways", {"side": "left", "count": 2})
    assert left[-1, 0, 0] - left[0, 0, 0] > 0.4  # the body's left is +X

    turn = _clip("turn", {"direction": "left", "angle": 90})
    across = turn[-1, 1] - turn[-1, 2]  # left hip minus right hip: the body's left
    assert np.degrees(np.arctan2(-across[2], across[0])) == pytest.approx(90, abs=15)


def test_walking_speed_is_human(samples):
    for joints in samples["walk"]:
        speed = np.linalg.norm(np.diff(joints[:, 0, [0, 2]], axis=0), axis=-1) * FPS
        assert 0.5 < speed.max() < 2.0
    for joints in samples["run"]:
        speed = np.linalg.norm(np.diff(joints[:, 0, [0, 2]], axis=0), axis=-1) * FPS
        assert 2.2 < speed.max() < 5.0


def test_roundtrip_on_200_procedural_clips():
    rng = np.random.default_rng(11)
    worst = 0.0
    for i in range(200):
        style = Style.sample(rng)
        split = "test" if i % 5 == 0 else "train"
        joints = synthesize(sample_sequence(rng, split, style), style).joints[:, :22]
        aligned = canonicalize(joints)[:-1]
        worst = max(worst, float(np.abs(features_to_joints(joints_to_features(joints)) - aligned).max()))
    assert worst < 1e-4, worst


def test_caption_grammar_is_fully_tagged():
    rng = np.random.default_rng(3)
    for name, primitive in PRIMITIVES.items():
        for _ in range(50):
            for phrase in primitive.phrases(primitive.sample(rng)):
                tokens = pos_tokens(phrase)
                assert len(tokens) == len(phrase.replace(",", " ").split())
    assert pos_tokens("a person does two kicks then kicks twice") == [
        "a/DET", "person/NOUN", "do/VERB", "two/NUM", "kick/NOUN", "then/ADV", "kick/VERB", "twice/ADV"]  # fmt: skip
    with pytest.raises(KeyError, match="zzz"):
        pos_tokens("a person zzz")
    assert all(pos in {"DET", "PRON", "NOUN", "VERB", "ADJ", "ADV", "ADP", "CCONJ", "NUM", "PART", "SCONJ"}
               for _, pos in LEXICON.values())  # fmt: skip


def _tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("data") / "procedural", 40, seed=5, workers=2, progress=False)


def test_same_seed_same_bytes_whatever_the_workers(dataset, tmp_path):
    again = generate_dataset(tmp_path / "again", 40, seed=5, workers=1, progress=False)
    assert _tree_digest(again) == _tree_digest(dataset)
    other = generate_dataset(tmp_path / "other", 40, seed=6, workers=2, progress=False)
    assert _tree_digest(other) != _tree_digest(dataset)


def test_layout_loads_and_matches_its_rotations(dataset, tmp_path):
    for name in ("Mean.npy", "Std.npy", "train.txt", "val.txt", "test.txt", "all.txt", "meta.json",
                 "annotations.jsonl"):  # fmt: skip
        assert (dataset / name).is_file(), name
    ids = (dataset / "all.txt").read_text().split()
    assert len(ids) == 40
    rows = load_humanml3d(dataset, "train", cache_dir=tmp_path / "cache")
    assert len(rows) >= 3 * len((dataset / "train.txt").read_text().split())
    for clip_id in ids[:10]:
        features = np.load(dataset / "new_joint_vecs" / f"{clip_id}.npy")
        joints = np.load(dataset / "new_joints" / f"{clip_id}.npy")
        assert 40 <= len(features) <= 196 and features.shape[1] == 263
        np.testing.assert_allclose(features_to_joints(features), joints, atol=1e-6)
        # The stored local rotations are exact targets: their FK is the clip's joints.
        smpl = read_smpl_npz(dataset / "smpl" / f"{clip_id}.npz")
        quats = axis_angle_to_quat(smpl["poses"].reshape(-1, 24, 3).astype(np.float64))
        fk = forward_kinematics(quats, smpl["trans"].astype(np.float64))[:, :22]
        assert np.abs(fk - joints).max() < 1e-4
    std = np.load(dataset / "Std.npy")
    assert std.shape == (263,) and (std > 0).all()


def test_held_out_paraphrases_and_pairs_stay_out_of_training(dataset):
    checked = 0
    annotations = [json.loads(line) for line in (dataset / "annotations.jsonl").read_text().splitlines()]
    for clip in annotations:
        names = [s["primitive"] for s in clip["segments"] if s["described"]]
        pairs = set(zip(names[:-1], names[1:]))
        if clip["split"] != "test":
            assert not pairs & HELD_OUT_PAIRS
            captions = (dataset / "texts" / f"{clip['id']}.txt").read_text()
            for segment in clip["segments"]:
                phrases = PRIMITIVES[segment["primitive"]].phrases(segment["params"])
                if segment["described"] and not any(phrases[-1] in other for other in phrases[:-1]):
                    assert phrases[-1] not in captions
                    checked += 1
    assert checked > 20


def test_bad_arguments(dataset, tmp_path):
    with pytest.raises(FileExistsError, match="not empty"):
        generate_dataset(dataset, 4, seed=0, progress=False)
    with pytest.raises(ValueError, match="num_clips"):
        generate_dataset(tmp_path / "none", 0)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run([sys.executable, "-m", "motion_env.procedural", "--out", str(out), "--num-clips", "6",
                             "--seed", "1", "--workers", "1"], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(list((out / "new_joint_vecs").glob("*.npy"))) == 6
    again = subprocess.run([sys.executable, "-m", "motion_env.procedural", "--out", str(out), "--num-clips", "6"],
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_export_cli_writes_a_bvh_of_the_clip(dataset, tmp_path):
    from motion_env.export import read_bvh

    out = tmp_path / "clip.bvh"
    result = subprocess.run([sys.executable, "-m", "motion_env.export", "--data", str(dataset), "--id", "000002",
                             "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    bvh = read_bvh(out)
    order = [bvh.names.index(name) for name in JOINT_NAMES]  # file order -> SMPL order
    joints = forward_kinematics(bvh.local_quats[:, order], bvh.root_positions, bvh.offsets[order])[:, :22]
    expected = np.load(dataset / "new_joints" / "000002.npy")
    assert np.abs(joints - expected).max() < 1e-4
    missing = subprocess.run([sys.executable, "-m", "motion_env.export", "--data", str(dataset), "--id", "nope",
                              "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 2 and "nope.npz" in missing.stderr
