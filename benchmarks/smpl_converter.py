"""Joints -> SMPL: the learned converter against the iterative fitter, on held-out clips.

``python benchmarks/smpl_converter.py --model outputs/smpl_converter --data_dir data/procedural --clips 32``

Both convert the same padded batch of test-split joints; the error is the mean per-joint position
error (22 joints, valid frames) of the forward kinematics of their rotations against the joints,
and the rotation error the mean geodesic angle to the clips' stored rotations (24 joints; twists
the joints cannot show count against both). Prints one table; the ratios compare numbers measured
in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


def _seconds(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call, and its result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _errors(rot6d: torch.Tensor, joints: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple:
    from motion_env.rotations import cont6d_to_matrix
    from reward_models.smpl import smpl_to_joints

    position = (smpl_to_joints(rot6d)[..., :22, :] - joints).norm(dim=-1).mean(-1)[mask]  # (frames,) m
    a, b = cont6d_to_matrix(rot6d[..., :24, :]), cont6d_to_matrix(targets[..., :24, :])
    angle = torch.rad2deg(torch.acos((((a * b).sum((-1, -2)) - 1) / 2).clamp(-1, 1)))[mask]  # (frames, 24)
    return 1000 * position.mean().item(), 1000 * position.max().item(), angle.mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/smpl_converter", help="converter directory (save_pretrained)")
    parser.add_argument("--data_dir", default="data/procedural", help="dataset with smpl/<id>.npz")
    parser.add_argument("--split", default="test")
    parser.add_argument("--clips", type=int, default=32, help="number of clips of the split (its first N)")
    parser.add_argument("--fit_iterations", type=int, default=None, help="Adam steps of the fitter (its default)")
    parser.add_argument("--fit_lr", type=float, default=None, help="the fitter's learning rate (its default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed converter calls (median)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from motion_env.datasets import read_split
    from reward_models.smpl import JointsToSMPL, smpl_targets
    from reward_models.smpl_fit import FIT_ITERATIONS, FIT_LR, fit_smpl

    iterations = args.fit_iterations or FIT_ITERATIONS
    lr = args.fit_lr or FIT_LR

    ids = read_split(args.data_dir, args.split)[: args.clips]
    clips = [np.load(os.path.join(args.data_dir, "new_joints", f"{clip_id}.npy")) for clip_id in ids]
    lengths = torch.tensor([len(clip) for clip in clips])
    joints = torch.zeros(len(clips), int(lengths.max()), 22, 3)  # (B, T, 22, 3)
    targets = torch.zeros(joints.shape[:2] + (25, 6))  # (B, T, 25, 6)
    for i, (clip_id, clip) in enumerate(zip(ids, clips)):
        joints[i, : len(clip)] = torch.from_numpy(clip)
        targets[i, : len(clip)] = torch.from_numpy(smpl_targets(args.data_dir, clip_id))
    mask = torch.arange(joints.shape[1]) < lengths[:, None]  # (B, T)

    model = JointsToSMPL.from_pretrained(args.model).float().eval()
    converter_s, converted = _seconds(lambda: model.convert(joints, lengths), args.repeats)
    start = time.perf_counter()
    fitted = fit_smpl(joints, iterations=iterations, lr=lr, lengths=lengths)
    fitter_s = time.perf_counter() - start

    frames = int(lengths.sum())
    rows = [("converter", converter_s, *_errors(converted, joints, targets, mask)),
            (f"fitter ({iterations} Adam steps, lr {lr:g})", fitter_s, *_errors(fitted, joints, targets, mask))]  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    print(f"{len(ids)} {args.split} clips, {frames} frames, one padded batch; converter {params / 1e6:.2f}M parameters; "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{'method':<34} {'wall s':>9} {'frames/s':>10} {'MPJPE mm':>9} {'worst frame mm':>14} {'rot err deg':>11}")
    for name, seconds, mpjpe, worst, angle in rows:
        print(f"{name:<34} {seconds:>9.3f} {frames / seconds:>10.0f} {mpjpe:>9.2f} {worst:>14.1f} {angle:>11.1f}")
    print(f"speed ratio (fitter / converter): {fitter_s / converter_s:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
