"""The perception critic: Bradley-Terry loss, training, windowed scoring, invariances, pairs, MotionPercept, recipe."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from motion_env.procedural import PRIMITIVES
from motion_env.procedural.base import Style
from motion_env.procedural.compose import synthesize
from motion_env.rotations import axis_angle_to_matrix, cont6d_to_matrix, matrix_to_cont6d, quat_to_cont6d
from reward_models.critic import (
    MotionCritic,
    MotionCriticConfig,
    bradley_terry_loss,
    count_parameters,
    window_starts,
)
from reward_models.critic_pairs import CLEAN, PairWindows, build_pair_windows, evaluate_critic, format_report
from reward_models.motionpercept import read_motionpercept

DATA = Path(__file__).parents[1] / "data"
RECIPES = Path(__file__).parents[2] / "recipes"
WALK = {"steps": 8, "speed": "normal", "direction": "forward", "curve": "straight"}


def tiny_config(**overrides) -> MotionCriticConfig:
    return MotionCriticConfig(**{"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                                 "dropout": 0.0, **overrides})  # fmt: skip


def _clip(name="walk", params=None):
    clip = synthesize([(PRIMITIVES[name], params or WALK)], Style())
    rot6d = np.concatenate([quat_to_cont6d(clip.local_quats), np.pad(clip.root, ((0, 0), (0, 3)))[:, None]], axis=1)
    return torch.tensor(rot6d, dtype=torch.float32), clip.joints[:, :22]  # (T, 25, 6), (T, 22, 3)


@pytest.fixture(scope="module")
def walk():
    return _clip()[0]  # (102, 25, 6)


@pytest.fixture(scope="module")
def critic():
    torch.manual_seed(0)
    return MotionCritic(tiny_config()).eval()


def _turn_about_y(rot6d, angle, shift):
    """The same motion turned by ``angle`` about Y and shifted on the floor plane by ``shift`` (x, z)."""
    c, s = math.cos(angle), math.sin(angle)
    turn = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    out = rot6d.clone()
    out[..., 0, :] = matrix_to_cont6d(turn @ cont6d_to_matrix(rot6d[..., 0, :]))
    out[..., 24, :3] = rot6d[..., 24, :3] @ turn.T + torch.tensor([shift[0], 0.0, shift[1]])
    return out


def test_bradley_terry_loss_on_hand_computed_scores():
    better, worse = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 2  # -mean log sigmoid(s_b - s_w)
    assert bradley_terry_loss(better, worse).item() == pytest.approx(expected)
    assert bradley_terry_loss(torch.tensor([5.0]), torch.tensor([0.0])).item() == pytest.approx(
        math.log(1 + math.exp(-5))
    )
    assert bradley_terry_loss(torch.tensor([0.0]), torch.tensor([5.0])).item() == pytest.approx(
        math.log(1 + math.exp(5))
    )


def test_forward_returns_the_loss_of_its_own_scores(critic, walk):
    better = walk[None, :60].repeat(3, 1, 1, 1)
    worse = better + 0.05 * torch.randn(better.shape, generator=torch.Generator().manual_seed(0))
    out = critic(better=better, worse=worse)
    assert out.scores_better.shape == out.scores_worse.shape == (3,)
    assert out.loss.item() == pytest.approx(bradley_terry_loss(out.scores_better, out.scores_worse).item())
    assert out.accuracy.item() == pytest.approx((out.scores_better > out.scores_worse).float().mean().item())
    swapped = critic(better=worse, worse=better)
    torch.testing.assert_close(swapped.scores_better, out.scores_worse)
    assert critic(motion=better).scores.shape == (3,)
    assert count_parameters(MotionCritic(MotionCriticConfig())) <= 1_500_000  # the default fits the bundle


def test_a_tiny_critic_learns_to_prefer_smooth_motion(walk):
    torch.manual_seed(0)
    model = MotionCritic(tiny_config()).train()
    g = torch.Generator().manual_seed(1)
    starts = torch.randint(0, len(walk) - 60, (16,), generator=g)
    better = torch.stack([walk[s : s + 60] for s in starts.tolist()])  # (16, 60, 25, 6)
    worse = better + 0.03 * torch.randn(better.shape, generator=g)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model(better=better, worse=worse).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()
    assert (model.score(better) > model.score(worse)).all()


def test_window_starts_cover_every_frame():
    starts, real = window_starts(torch.tensor([100, 60, 20, 150]), window=60, stride=30)
    assert [s[r].tolist() for s, r in zip(starts, real)] == [[0, 30, 40], [0], [0], [0, 30, 60, 90]]


def test_windowed_score_is_the_mean_of_its_windows_and_rows_stay_in_order(critic, walk):
    long, short = walk[:100], walk[10:30]
    manual_long = critic(motion=torch.stack([long[s : s + 60] for s in (0, 30, 40)])).scores.mean()
    manual_short = critic(motion=short[None]).scores[0]
    batch = torch.zeros(3, 100, 25, 6)
    batch[0], batch[1, :20], batch[2, :60] = long, short, walk[40:100]
    batch[1, 20:] = float("nan")  # padding is never read
    lengths = torch.tensor([100, 20, 60])
    scores = critic.score(batch, lengths)
    torch.testing.assert_close(
        scores, torch.stack([manual_long, manual_short, critic(motion=walk[None, 40:100]).scores[0]])
    )
    order = torch.tensor([2, 0, 1])
    torch.testing.assert_close(critic.score(batch[order], lengths[order]), scores[order])
    torch.testing.assert_close(critic.score(batch, lengths, batch_size=2), scores)


def test_score_ignores_place_and_heading_but_not_height(critic, walk):
    clip = walk[None]
    base = critic.score(clip)
    moved = (critic.score(_turn_about_y(clip, 2.0, (3.0, -1.5))) - base).abs().item()
    lifted = clip.clone()
    lifted[..., 24, 1] += 0.3
    raised = (critic.score(lifted) - base).abs().item()
    assert moved < 1e-3 * raised, (moved, raised)  # an untrained critic's scores are small; compare the two


def test_bad_input_is_refused(critic, walk):
    clip = walk[None, :60].clone()
    with pytest.raises(ValueError, match=r"shape \(B, T, 25, 6\)"):
        critic.score(clip[..., :24, :])
    with pytest.raises(ValueError, match=r"shape \(B, T, 25, 6\)"):
        critic.score(clip[0])
    for bad in (float("nan"), float("inf")):
        broken = clip.clone()
        broken[0, 7, 3, 2] = bad
        with pytest.raises(ValueError, match="NaN or Inf .*row 0, frame 7"):
            critic.score(broken)
    with pytest.raises(ValueError, match=r"lengths must be 1 whole numbers in \[1, T=60\], got \[0\]"):
        critic.score(clip, torch.tensor([0]))
    with pytest.raises(ValueError, match="no frames"):
        critic.score(torch.zeros(1, 0, 25, 6))
    with pytest.raises(ValueError, match="more than a window"):
        critic(motion=walk[None])
    with pytest.raises(ValueError, match="both better and worse"):
        critic(better=clip)
    with pytest.raises(ValueError, match="hidden_size .* multiple of num_heads"):
        MotionCriticConfig(hidden_size=30, num_heads=4)


def test_save_load_round_trip_in_fp16(critic, walk, tmp_path):
    critic.set_input_normalizer(
        torch.full((critic.config.input_dim,), 0.1), torch.full((critic.config.input_dim,), 2.0)
    )
    critic.to(torch.float16).save_pretrained(tmp_path)
    critic.to(torch.float32)
    loaded = MotionCritic.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert loaded.input_std[0].item() == 2.0 and loaded.config.model_type == "motion_critic"
    torch.testing.assert_close(loaded.score(walk[None]), critic.score(walk[None]), atol=2e-2, rtol=2e-2)


def test_motionpercept_reader_on_the_fixture(tmp_path):
    raw = torch.load(DATA / "motionpercept" / "pairs.pth", weights_only=True)
    pairs = read_motionpercept(DATA / "motionpercept" / "pairs.pth")
    assert pairs.better.shape == pairs.worse.shape == (3, 60, 25, 6) and pairs.better.dtype == torch.float32
    for i, pair in enumerate(raw):
        for ours, theirs in ((pairs.better[i], pair["motion_better"]), (pairs.worse[i], pair["motion_worse"])):
            torch.testing.assert_close(cont6d_to_matrix(ours[:, :24].double()),
                                       axis_angle_to_matrix(theirs[:, :24].double()), atol=1e-5, rtol=0)  # fmt: skip
            torch.testing.assert_close(ours[:, 24, :3], theirs[:, 24])
            assert (ours[:, 24, 3:] == 0).all()

    # MDM's 6D (the matrix's first two rows) reads the same as the axis-angle file
    def as_rows(motion):  # (60, 25, 3) -> (60, 25, 6): the first two matrix rows, then the root location
        rows = axis_angle_to_matrix(motion[:, :24])[..., :2, :].flatten(-2)  # (60, 24, 6)
        return torch.cat([rows, torch.nn.functional.pad(motion[:, 24:], (0, 3))], dim=1)

    rows = [{key: as_rows(p[key]) for key in ("motion_better", "motion_worse")} for p in raw]
    torch.save(rows, tmp_path / "rows.pth")
    torch.testing.assert_close(read_motionpercept(tmp_path / "rows.pth").better, pairs.better, atol=1e-5, rtol=0)
    # a collated file (one dict of stacked tensors) too
    torch.save({k: torch.stack([p[k] for p in raw]) for k in ("motion_better", "motion_worse")}, tmp_path / "s.pth")
    torch.testing.assert_close(read_motionpercept(tmp_path / "s.pth").worse, pairs.worse)
    data = PairWindows.from_pairs(*pairs)
    assert len(data) == 3 and data.windows.shape == (6, 60, 25, 6) and (data.windows[:, 0, 24, [0, 2]] == 0).all()
    torch.testing.assert_close(data[1]["worse"][:, :24], pairs.worse[1, :, :24])


def test_motionpercept_reader_refuses_other_layouts(tmp_path):
    good = torch.zeros(60, 25, 3)
    cases = {
        "keys": ([{"better": good, "worse": good}], "must be a dict with keys"),
        "shape": ([{"motion_better": torch.zeros(60, 24, 3), "motion_worse": good}], r"shape \(60, 24, 3\); expected"),
        "frames": ([{"motion_better": torch.zeros(59, 25, 3), "motion_worse": good}], r"shape \(59, 25, 3\)"),
        "nan": ([{"motion_better": good, "motion_worse": torch.full((60, 25, 3), float("nan"))}], "NaN or Inf"),
        "empty": ([], "empty"),
        "kind": ("pairs", "expected a list of dicts"),
    }
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / f"{name}.pth")
        with pytest.raises(ValueError, match=message):
            read_motionpercept(tmp_path / f"{name}.pth")
    torch.save([{"motion_better": np.zeros((60, 25, 3)), "motion_worse": np.zeros((60, 25, 3))}], tmp_path / "np.pth")
    with pytest.raises(ValueError, match="needs full unpickling"):
        read_motionpercept(tmp_path / "np.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable"):
        read_motionpercept(tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_motionpercept(tmp_path / "missing.pth")


def _converter(tmp_path=None):
    from reward_models.smpl import JointsToSMPL, JointsToSMPLConfig

    torch.manual_seed(0)
    model = JointsToSMPL(JointsToSMPLConfig(conv_channels=8, conv_layers=1, hidden_size=16, lstm_hidden_size=16)).eval()
    if tmp_path is not None:
        model.save_pretrained(tmp_path)
    return model


def test_pair_windows_are_aligned_copies_of_one_clip():
    clips = [_clip()[1], _clip("wave", {"side": "left", "count": 2})[1]]  # 102 and 46 frames
    data = build_pair_windows(clips, _converter().convert, artifacts=("floating", "jitter"), severities=(0.5, 1.0))
    assert data.windows.shape == (2 * 5, 60, 25, 6) and data.windows.dtype == torch.float16
    assert data.lengths.tolist() == [60] * 5 + [46] * 5
    assert data.artifact[:5] == [CLEAN, "floating", "floating", "jitter", "jitter"]
    assert len(data) == 12 and (data.clip[data.pairs[:, 0]] == data.clip[data.pairs[:, 1]]).all()
    assert (data.severity[data.pairs[:, 0]] < data.severity[data.pairs[:, 1]]).all()
    floating = data.windows[1, :, 24, 1].float() - data.windows[0, :, 24, 1].float()
    torch.testing.assert_close(floating, torch.full((60,), 0.15), atol=1e-3, rtol=0)  # the same frames, lifted
    assert (data.windows[:, 0, 24, [0, 2]] == 0).all()  # floor-plane position relative to the window start
    item = data[0]
    assert set(item) == {"better", "worse", "better_lengths", "worse_lengths"} and item["better"].dtype == torch.float32


class _SeverityReader:
    """A critic whose score is minus the value every frame of a window holds."""

    training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def score(self, windows, lengths, batch_size=512):
        return -windows.mean(dim=(1, 2, 3)) * self.sign


def test_evaluation_counts_accuracy_and_severity_order():
    severity = torch.tensor([0.0, 0.5, 1.0, 0.0, 0.5, 1.0])
    data = PairWindows(windows=severity[:, None, None, None].expand(6, 4, 25, 6).clone(), lengths=torch.full((6,), 4),
                       clip=torch.tensor([0, 0, 0, 1, 1, 1]),
                       artifact=[CLEAN, "jitter", "jitter", CLEAN, "floating", "floating"], severity=severity,
                       pairs=torch.tensor([[0, 1], [0, 2], [1, 2], [3, 4], [3, 5], [4, 5]]))  # fmt: skip
    reader = _SeverityReader()
    reader.sign = 1.0
    report = evaluate_critic(reader, data)
    assert report["pairwise_accuracy"] == 1.0 and report["num_pairs"] == 6
    assert report["per_artifact"]["jitter"] == {
        "accuracy": 1.0,
        "clean_vs_degraded": 1.0,
        "severity_pairs": 1.0,
        "num_pairs": 3,
    }
    assert report["severity_means"]["floating"] == {"0.0": 0.0, "0.5": -0.5, "1.0": -1.0}
    assert report["monotonic_fraction"] == 1.0
    reader.sign = -1.0
    flipped = evaluate_critic(reader, data)
    assert flipped["pairwise_accuracy"] == 0.0 and flipped["monotonic_fraction"] == 0.0
    assert "jitter" in format_report(flipped) and "not monotonic" in format_report(flipped)


def test_recipe_trains_saves_and_evaluates(tmp_path):
    data = tmp_path / "data"
    (data / "new_joints").mkdir(parents=True)
    plans = [("walk", WALK), ("squat", {"count": 3, "depth": 0.4}), ("wave", {"side": "right", "count": 4}),
             ("jump", {"count": 2, "mode": "up", "height": 0.3})]  # fmt: skip
    for i, (name, params) in enumerate(plans):
        np.save(data / "new_joints" / f"{i:06d}.npy", _clip(name, params)[1].astype(np.float32))
    (data / "train.txt").write_text("000000\n000001\n000002\n")
    (data / "test.txt").write_text("000003\n")
    _converter(tmp_path / "converter")
    out = tmp_path / "critic"
    args = ["--data_dir", data, "--converter_path", tmp_path / "converter", "--output_dir", out, "--max_steps", "3",
            "--per_device_train_batch_size", "8", "--hidden_size", "16", "--num_layers", "1", "--num_heads", "2",
            "--intermediate_size", "32", "--report_to", "none", "--save_strategy", "no", "--dataloader_num_workers",
            "0", "--dataloader_pin_memory", "false", "--motionpercept", DATA / "motionpercept" / "pairs.pth",
            "--motionpercept_eval", DATA / "motionpercept" / "pairs.pth"]  # fmt: skip
    command = [sys.executable, str(RECIPES / "train_critic.py"), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held-out pairs from 1 test clips" in result.stdout and "severity ordering" in result.stdout
    report = json.loads((out / "critic_eval.json").read_text())
    assert set(report["procedural_test"]["per_artifact"]) == {"foot_sliding", "jitter", "floating", "penetration",
                                                              "freezing", "jump_cut", "stretched_bones"}  # fmt: skip
    assert report["motionpercept_eval"]["num_pairs"] == 3 and report["train_pairs"] > 3
    model = MotionCritic.from_pretrained(out)
    assert model.config.hidden_size == 16 and model.input_std.ne(1).any()  # the input statistics were stored
