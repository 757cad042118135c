import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from motion_env import render
from motion_env.render import (
    PALETTE,
    contact_sheet,
    main,
    mp4_available,
    render_comparison_gif,
    render_frames,
    render_gif,
    render_mp4,
)
from motion_env.rotations import axis_angle_to_quat
from motion_env.skeleton import NUM_JOINTS, forward_kinematics, rest_joints


def walking_joints(num_frames=40, seed=0):
    """(T, 22, 3) joints: small smooth local rotations, a root moving forward, on the floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames)[:, None, None] / 20.0
    axis_angle = 0.3 * np.sin(rng.uniform(1, 3, (1, 24, 3)) * t + rng.uniform(0, 6, (1, 24, 3)))
    axis_angle[:, 0] = 0.0
    t = t[:, 0, 0]
    root = np.stack([0.3 * t, 0.95 + 0.0 * t, 1.2 * t], axis=1)
    joints = forward_kinematics(axis_angle_to_quat(axis_angle), root)[:, :NUM_JOINTS]
    joints[..., 1] -= joints[..., 1].min()
    return joints.astype(np.float32)


def test_gif_has_every_frame_at_the_requested_size(tmp_path):
    joints = walking_joints(num_frames=30)
    path = render_gif(joints, tmp_path / "clip.gif", caption="a person walks forward", size=(200, 160))
    with Image.open(path) as gif:
        assert gif.size == (200, 160)
        assert gif.n_frames == 30
        assert gif.info["loop"] == 0 and gif.info["duration"] == 50


def test_comparison_gif_is_panels_side_by_side_as_long_as_the_longest_clip(tmp_path):
    short, long = walking_joints(num_frames=12, seed=1), walking_joints(num_frames=20, seed=2)
    path = render_comparison_gif([(short, "base"), (long, "fine-tuned")], tmp_path / "pair.gif",
                                 size=(120, 100), title="a person walks forward")  # fmt: skip
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    with Image.open(path) as gif:
        assert gif.n_frames == 20 and gif.info["loop"] == 0
        assert gif.width == 2 * 120 and gif.height > 100  # the title sits above the panels
        gif.seek(11)
        held = np.asarray(gif.convert("RGB"))[:, :120]
        gif.seek(19)
        assert np.array_equal(np.asarray(gif.convert("RGB"))[:, :120], held)  # the short clip holds its last frame
    untitled = render_comparison_gif([(short, None)] * 3, tmp_path / "three.gif", size=(64, 64))
    with Image.open(untitled) as gif:
        assert gif.size == (3 * 64, 64) and gif.n_frames == 12
    with pytest.raises(ValueError, match="empty"):
        render_comparison_gif([], tmp_path / "none.gif")


def _centroid_x(frame: Image.Image, colour: str) -> float:
    index = list(PALETTE).index(colour)
    ys, xs = np.nonzero(np.asarray(frame) == index)
    assert len(xs) > 0, f"no {colour} pixels"
    return xs.mean()


def test_left_limbs_red_and_on_screen_right_in_t_pose():
    # The camera sits in front of a body facing +Z, so its left (+X) is on the picture's right.
    pose = rest_joints(NUM_JOINTS)
    pose[:, 1] -= pose[:, 1].min()
    frame = render_frames(pose[None])[0]
    assert _centroid_x(frame, "left_arm") > _centroid_x(frame, "spine") > _centroid_x(frame, "right_arm")
    assert _centroid_x(frame, "left_leg") > _centroid_x(frame, "right_leg")


def test_camera_is_fixed_over_the_clip():
    joints = walking_joints(num_frames=20)
    frames = render_frames(joints, size=(160, 160))
    floor = list(PALETTE).index("grid")
    first, last = np.asarray(frames[0]) == floor, np.asarray(frames[-1]) == floor
    assert (first & last).sum() > 0.8 * min(first.sum(), last.sum())  # the grid did not move


def test_contact_sheet_dimensions(tmp_path):
    clips = [walking_joints(num_frames=n, seed=n) for n in (20, 33, 41)]
    path = contact_sheet(clips, tmp_path / "sheet.png", frames_per_clip=4, captions=["a", "b", "c"], cell_size=96)
    with Image.open(path) as sheet:
        assert sheet.width == 4 * 96
        row_height = sheet.height / 3
        assert row_height == int(row_height) and 96 < row_height < 96 + 30


def test_bad_joints_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"joints must have shape \(T, 22, 3\).*\(5, 24, 3\)"):
        render_gif(np.zeros((5, 24, 3)), tmp_path / "a.gif")
    bad = walking_joints(num_frames=5)
    bad[2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf .*frame 2"):
        render_gif(bad, tmp_path / "a.gif")
    with pytest.raises(ValueError, match=r"clips\[1\] must have shape"):
        contact_sheet([walking_joints(5), np.zeros((5, 21, 3))], tmp_path / "s.png")
    with pytest.raises(ValueError, match="2 captions for 1 clips"):
        contact_sheet([walking_joints(5)], tmp_path / "s.png", captions=["a", "b"])
    assert not list(tmp_path.iterdir())


def test_mp4_without_encoder_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    assert not mp4_available()
    with pytest.raises(RuntimeError, match="imageio-ffmpeg.*ffmpeg"):
        render_mp4(walking_joints(5), tmp_path / "a.mp4")


@pytest.mark.skipif(not mp4_available(), reason="no MP4 encoder installed")
def test_mp4_written(tmp_path):
    path = render_mp4(walking_joints(10), tmp_path / "a.mp4", size=(161, 120))
    assert path.stat().st_size > 0


def _write_dataset(root, ids):
    (root / "new_joints").mkdir(parents=True)
    (root / "texts").mkdir()
    for i, clip_id in enumerate(ids):
        np.save(root / "new_joints" / f"{clip_id}.npy", walking_joints(num_frames=20 + i, seed=i))
        (root / "texts" / f"{clip_id}.txt").write_text(
            f"a person walks number {i}#a/DET person/NOUN walk/VERB#0.0#0.0\nsomeone strolls#someone/PRON#0.0#0.0\n"
        )
    (root / "test.txt").write_text("\n".join(ids) + "\n")


def test_cli_writes_gifs_and_sheet(tmp_path):
    _write_dataset(tmp_path / "data", ["000001", "000002", "M000003"])
    out = tmp_path / "out"
    data = str(tmp_path / "data")
    command = [sys.executable, "-m", "motion_env.render", "--data", data, "--num", "2", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    gifs = sorted(out.glob("*.gif"))
    assert len(gifs) == 2
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width == 5 * 128
    with Image.open(gifs[0]) as gif:
        clip_id = gifs[0].stem
        assert gif.n_frames == len(np.load(tmp_path / "data" / "new_joints" / f"{clip_id}.npy"))


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path / "out")])
    assert "--data: directory" in capsys.readouterr().err
    _write_dataset(tmp_path / "data", ["000001"])
    assert main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--ids", "000009"]) == 1
    assert "clip '000009'" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--split", "val"]) == 1
    assert "val.txt not found" in capsys.readouterr().err
