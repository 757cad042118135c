"""Joints -> SMPL: targets, the iterative fitter, the converter, its recipe, and the smplx bridge."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from motion_env.export import read_smpl_npz, to_smpl_npz
from motion_env.rotations import (
    axis_angle_to_matrix,
    cont6d_to_matrix,
    cont6d_to_quat,
    matrix_to_axis_angle,
    matrix_to_cont6d,
)
from motion_env.skeleton import PARENTS, global_rotations, rest_joints
from reward_models.smpl import (
    JointsToSMPL,
    JointsToSMPLConfig,
    global_forward_kinematics,
    global_to_local,
    identity_rot6d,
    pack_rot6d,
    smpl_targets,
    smpl_to_joints,
    smplx_forward,
)
from reward_models.smpl_fit import fit_smpl

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "train_smpl_converter.py"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A small procedural dataset (joints, features, stored rotations) in HumanML3D's layout."""
    from motion_env.procedural import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("data") / "procedural", 10, seed=3, workers=1, progress=False)


def clip_ids(root: Path) -> list[str]:
    return (root / "all.txt").read_text().split()


def tiny_model(**overrides) -> JointsToSMPL:
    torch.manual_seed(0)
    config = {"conv_channels": 8, "hidden_size": 16, "lstm_hidden_size": 12, **overrides}
    return JointsToSMPL(JointsToSMPLConfig(**config)).eval()


def random_rot6d(*shape, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    matrices = axis_angle_to_matrix(0.6 * torch.randn(*shape, 24, 3, generator=g))
    return pack_rot6d(matrix_to_cont6d(matrices), torch.randn(*shape, 3, generator=g))


# ------------------------------------------------------------------------------------- targets


def test_global_rotation_kinematics_match_the_skeleton():
    rot6d = random_rot6d(5, seed=2)  # (5, 25, 6)
    local = cont6d_to_matrix(rot6d[:, :24])
    global_rots = global_rotations(cont6d_to_quat(rot6d[:, :24]))  # (5, 24, 3, 3)
    torch.testing.assert_close(global_forward_kinematics(global_rots, rot6d[:, 24, :3]), smpl_to_joints(rot6d))
    torch.testing.assert_close(global_to_local(global_rots), local)


def test_targets_reproduce_the_stored_joints(dataset):
    for clip_id in clip_ids(dataset)[:4]:
        targets = smpl_targets(dataset, clip_id)
        joints = np.load(dataset / "new_joints" / f"{clip_id}.npy")
        assert targets.shape == (len(joints), 25, 6) and targets.dtype == np.float32
        assert np.abs(smpl_to_joints(targets)[:, :22] - joints).max() < 1e-3  # under 1 mm
        assert (targets[:, 24, 3:] == 0).all()


def test_targets_move_rotations_into_the_canonical_frame(dataset, tmp_path):
    """Stored rotations turned, shifted and one frame longer (a raw clip) still land on the joints."""
    clip_id = clip_ids(dataset)[0]
    (tmp_path / "smpl").mkdir()
    (tmp_path / "new_joints").mkdir()
    joints = np.load(dataset / "new_joints" / f"{clip_id}.npy")
    np.save(tmp_path / "new_joints" / f"{clip_id}.npy", joints)
    smpl = read_smpl_npz(dataset / "smpl" / f"{clip_id}.npz")
    poses = smpl["poses"].reshape(-1, 24, 3).astype(np.float64)
    poses, trans = np.concatenate([poses, poses[-1:]]), np.concatenate([smpl["trans"], smpl["trans"][-1:]])
    yaw = axis_angle_to_matrix(np.array([0.0, 2.0, 0.0]))
    poses[:, 0] = matrix_to_axis_angle(yaw @ axis_angle_to_matrix(poses[:, 0]))
    to_smpl_npz(poses, trans @ yaw.T + [3.0, 0.2, -1.0], tmp_path / "smpl" / f"{clip_id}.npz")

    targets = smpl_targets(tmp_path, clip_id)
    assert len(targets) == len(joints)
    assert np.abs(smpl_to_joints(targets)[:, :22] - joints).max() < 1e-3

    # Without stored joints, HumanML3D's canonicalisation of the rotations' own joints does the move.
    (tmp_path / "new_joints" / f"{clip_id}.npy").unlink()
    targets = smpl_targets(tmp_path, clip_id)
    assert len(targets) == len(joints) + 1
    assert np.abs(smpl_to_joints(targets)[:-1, :22] - joints).max() < 1e-3
    np.save(tmp_path / "new_joints" / f"{clip_id}.npy", joints)

    poses[:, 18] += 0.5  # a bent elbow no rigid move can undo
    to_smpl_npz(poses, trans, tmp_path / "smpl" / f"{clip_id}.npz")
    with pytest.raises(ValueError, match=r"miss .*new_joints"):
        smpl_targets(tmp_path, clip_id)
    with pytest.raises(FileNotFoundError, match=r"smpl/nope\.npz"):
        smpl_targets(tmp_path, "nope")


# -------------------------------------------------------------------------------------- fitter


def mpjpe(rot6d: torch.Tensor, joints) -> float:
    return float((smpl_to_joints(rot6d)[..., :22, :] - torch.as_tensor(joints)).norm(dim=-1).mean())


def test_fitter_reaches_the_joints(dataset):
    joints = torch.from_numpy(np.load(dataset / "new_joints" / f"{clip_ids(dataset)[1]}.npy"))[:40]
    rest = identity_rot6d((len(joints),))
    rest[:, 24, :3] = joints[:, 0]
    fitted = fit_smpl(joints, iterations=150, lr=0.1)
    assert fitted.shape == (40, 25, 6)
    assert mpjpe(rest, joints) > 0.1 and mpjpe(fitted, joints) < 0.01  # 10 cm at rest -> under 1 cm
    # Exact rotations come back, and the free hand joints stay at rest.
    matrices = cont6d_to_matrix(fitted[:, :24])
    torch.testing.assert_close(matrices.transpose(-1, -2) @ matrices, torch.eye(3).expand_as(matrices), atol=1e-5,
                               rtol=0)  # fmt: skip
    assert (matrix_to_axis_angle(matrices[:, 22:]).norm(dim=-1) < 0.05).all()


def test_fitter_rows_are_independent_of_padding(dataset):
    ids = clip_ids(dataset)
    short = torch.from_numpy(np.load(dataset / "new_joints" / f"{ids[2]}.npy"))[:20]
    other = torch.from_numpy(np.load(dataset / "new_joints" / f"{ids[3]}.npy"))[:30]
    batch = torch.full((2, 30, 22, 3), 50.0)
    batch[0, :20], batch[1] = short, other
    batched = fit_smpl(batch, iterations=20, lengths=torch.tensor([20, 30]))
    alone = fit_smpl(short, iterations=20)
    torch.testing.assert_close(batched[0, :20], alone, atol=1e-4, rtol=0)
    torch.testing.assert_close(batched[0, 20:], identity_rot6d((10,)))


# ----------------------------------------------------------------------------------- converter


def test_converter_shapes_root_slot_and_valid_rotations():
    model = tiny_model()
    joints = 0.3 * torch.randn(2, 12, 22, 3)
    out = model(joints)
    assert out.rotations.shape == (2, 12, 25, 6) and out.loss is None
    torch.testing.assert_close(out.rotations[..., 24, :3], joints[..., 0, :])
    assert (out.rotations[..., 24, 3:] == 0).all()
    torch.testing.assert_close(
        out.rotations[..., :24, :], matrix_to_cont6d(cont6d_to_matrix(out.rotations[..., :24, :]))
    )


def test_converter_ignores_padding_and_the_floor_position():
    model = tiny_model()
    torch.manual_seed(1)
    short, long = 0.3 * torch.randn(1, 7, 22, 3), 0.3 * torch.randn(1, 12, 22, 3)
    batch = torch.cat([torch.cat([short, 9 * torch.randn(1, 5, 22, 3)], dim=1), long])  # (2, 12, 22, 3)
    batched = model(batch, lengths=torch.tensor([7, 12])).rotations
    torch.testing.assert_close(batched[0, :7], model(short).rotations[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[0, 7:], identity_rot6d((5,)))
    one_frame = model(batch, lengths=torch.tensor([1, 12])).rotations[0, :1]
    torch.testing.assert_close(one_frame, model(short[:, :1]).rotations[0], atol=1e-5, rtol=0)

    moved = model(short + torch.tensor([4.0, 0.0, -2.5])).rotations
    torch.testing.assert_close(moved[..., :24, :], model(short).rotations[..., :24, :], atol=1e-5, rtol=0)
    assert not torch.allclose(model(short + torch.tensor([0.0, 0.5, 0.0])).rotations[..., :24, :],
                              moved[..., :24, :])  # fmt: skip


def test_converter_loss_masks_padding_and_trains():
    model = tiny_model().train()
    joints = smpl_to_joints(random_rot6d(2, 10))[..., :22, :].float()
    labels = random_rot6d(2, 10).float()
    labels[..., 24, :3] = joints[..., 0, :]
    lengths = torch.tensor([10, 6])
    first = model(joints, lengths, labels)
    garbled_joints, garbled_labels = joints.clone(), labels.clone()
    garbled_joints[1, 6:], garbled_labels[1, 6:] = 7.0, -3.0
    second = model(garbled_joints, lengths, garbled_labels)
    for name in ("loss", "rotation_loss", "joint_loss"):
        torch.testing.assert_close(first[name], second[name], msg=name)
    weights = model.config.rotation_loss_weight, model.config.joint_loss_weight
    torch.testing.assert_close(first.loss, weights[0] * first.rotation_loss + weights[1] * first.joint_loss)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = model(joints, lengths, labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model(joints, lengths, labels).loss < 0.5 * first.loss


def test_converter_save_load_and_convert(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    loaded = JointsToSMPL.from_pretrained(tmp_path)
    assert loaded.config.model_type == "joints_to_smpl" and loaded.config.lstm_hidden_size == 12
    assert (tmp_path / "model.safetensors").is_file()
    joints = 0.3 * np.random.default_rng(0).standard_normal((9, 22, 3)).astype(np.float32)
    converted = loaded.convert(joints)
    assert isinstance(converted, np.ndarray) and converted.shape == (9, 25, 6)
    np.testing.assert_allclose(
        converted, model(torch.from_numpy(joints)[None]).rotations[0].detach().numpy(), atol=1e-6
    )


def test_default_converter_is_small():
    assert sum(p.numel() for p in JointsToSMPL(JointsToSMPLConfig()).parameters()) <= 1_500_000


def test_bad_inputs_raise():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"\(\.\.\., T, 22, 3\).*got \(1, 5, 21, 3\)"):
        model(torch.zeros(1, 5, 21, 3))
    joints = torch.zeros(1, 5, 22, 3)
    joints[0, 3, 7, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf \(first at index \(0, 3, 7, 1\)\)"):
        model.convert(joints)
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit_smpl(joints, iterations=2)
    with pytest.raises(ValueError, match=r"lengths .* got \[5, 6\]"):
        model(torch.zeros(2, 5, 22, 3), lengths=torch.tensor([5, 6]))
    with pytest.raises(ValueError, match=r"labels must have shape \(1, 5, 25, 6\)"):
        model(torch.zeros(1, 5, 22, 3), labels=torch.zeros(1, 5, 24, 6))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        JointsToSMPLConfig(kernel_size=4)


# -------------------------------------------------------------------------------------- recipe


def load_recipe():
    spec = importlib.util.spec_from_file_location("train_smpl_converter", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_recipe_windows_turn_joints_and_labels_together(dataset):
    recipe = load_recipe()
    clips = recipe.load_converter_clips(str(dataset), "train", max_clips=4)
    batch = recipe.ConverterWindowCollator(window=48, random_yaw=True, seed=1)(clips)
    straight = recipe.ConverterWindowCollator(window=48, random_yaw=False, seed=1)(clips)
    assert batch["joints"].shape == (4, 48, 22, 3) and batch["labels"].shape == (4, 48, 25, 6)
    mask = torch.arange(48) < batch["lengths"][:, None]
    fk = smpl_to_joints(batch["labels"])[..., :22, :]
    assert (fk - batch["joints"]).abs()[mask].max() < 1e-4  # the labels still pose the turned joints
    assert (batch["joints"] - straight["joints"]).abs().max() > 0.1  # and they were turned


def test_recipe_trains_and_saves_a_converter(dataset, tmp_path):
    out = tmp_path / "converter"
    command = [sys.executable, str(RECIPE), "--data_dir", str(dataset), "--output_dir", str(out), "--window", "16",
               "--conv_channels", "4", "--hidden_size", "8", "--lstm_hidden_size", "8", "--max_steps", "3",
               "--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no",
               "--dataloader_num_workers", "0", "--disable_tqdm", "true"]  # fmt: skip
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    model = JointsToSMPL.from_pretrained(out)
    assert model.config.conv_channels == 4 and model.config.hidden_size == 8
    joints = np.load(dataset / "new_joints" / f"{clip_ids(dataset)[0]}.npy")
    assert model.convert(joints).shape == (len(joints), 25, 6)


# -------------------------------------------------------------------------------- smplx bridge


def fabricated_smpl(path: Path, num_extra: int = 200) -> Path:
    """An SMPL model file in smplx's npz layout whose rest joints are our skeleton's.

    Vertices 0..23 sit on the rest joints and J_regressor picks them, so the body's joints are
    exactly ours; every vertex is skinned rigidly to one joint (vertex j to joint j).
    """
    rng = np.random.default_rng(0)
    owners = np.concatenate([np.arange(24), rng.integers(0, 24, num_extra)])
    v_template = rest_joints() + [0.0, 0.9, 0.0]
    v_template = np.concatenate([v_template, v_template[owners[24:]] + 0.05 * rng.standard_normal((num_extra, 3))])
    num_vertices = len(v_template)
    kintree = np.array([[2**32 - 1, *PARENTS[1:]], list(range(24))], dtype=np.int64)
    np.savez(path, v_template=v_template, f=rng.integers(0, num_vertices, (300, 3)),
             J_regressor=np.eye(24, num_vertices), weights=np.eye(24)[owners], kintree_table=kintree,
             shapedirs=0.01 * rng.standard_normal((num_vertices, 3, 10)),
             posedirs=np.zeros((num_vertices, 3, 207)))  # fmt: skip
    return path


def test_smplx_bridge_poses_the_body_with_our_rotations(tmp_path):
    model_file = fabricated_smpl(tmp_path / "SMPL_NEUTRAL.npz")
    rot6d = random_rot6d(3, 4)  # (3, 4, 25, 6)
    body = smplx_forward(rot6d, model_file)
    assert body.vertices.shape == (3, 4, 224, 3) and body.joints.shape == (3, 4, 24, 3) and body.faces.shape == (300, 3)
    ours = smpl_to_joints(rot6d).float()
    torch.testing.assert_close(body.joints, ours, atol=1e-4, rtol=0)
    torch.testing.assert_close(body.vertices[..., :24, :], ours, atol=1e-4, rtol=0)  # skinned to their joints

    # Bending the left elbow moves the wrist and hand, not the shoulder; a directory works too.
    bent = identity_rot6d((1,))
    bent[0, 18] = matrix_to_cont6d(axis_angle_to_matrix(torch.tensor([0.0, 1.5, 0.0])))
    straight, elbow = smplx_forward(identity_rot6d((1,)), tmp_path), smplx_forward(bent, tmp_path)
    moved = (elbow.joints - straight.joints).norm(dim=-1)[0]  # (24,)
    assert moved[16] < 1e-6 and moved[18] < 1e-6 and moved[20] > 0.2 and moved[22] > 0.2

    # With a body shape, the pelvis still lands on slot 24.
    shaped = smplx_forward(rot6d, model_file, betas=torch.linspace(-2, 2, 10))
    torch.testing.assert_close(shaped.joints[..., 0, :], rot6d[..., 24, :3].float(), atol=1e-5, rtol=0)


def test_smplx_bridge_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing/SMPL_NEUTRAL\.npz does not exist"):
        smplx_forward(identity_rot6d((2,)), tmp_path / "missing" / "SMPL_NEUTRAL.npz")
    with pytest.raises(FileNotFoundError, match=r"SMPL_FEMALE\.npz"):
        smplx_forward(identity_rot6d((2,)), tmp_path, gender="female")
    with pytest.raises(ValueError, match="pickle"):
        smplx_forward(identity_rot6d((2,)), tmp_path / "SMPL_NEUTRAL.pkl")
    np.savez(tmp_path / "SMPL_MALE.npz", v_template=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"lacks \['f', 'J_regressor'"):
        smplx_forward(identity_rot6d((2,)), tmp_path, gender="male")
    with pytest.raises(ValueError, match=r"rot6d must have shape"):
        smplx_forward(torch.zeros(2, 24, 6), tmp_path)
