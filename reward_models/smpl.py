"""The joints -> SMPL converter ``g`` (Appendix A), and the public face of the SMPL path.

The human-preference reward is ``r_p = C(g(m))`` (Eq. 6): a perception model ``C`` reads SMPL
rotations, and ``g`` (:class:`JointsToSMPL`) turns joint positions into them in one forward pass,
replacing the slow iterative fit (:func:`fit_smpl`). The rotations are ``rot6d`` ``(..., T, 25, 6)``
-- 24 local rotations in 6D (first two matrix columns) plus the pelvis position; see
:mod:`reward_models.smpl_pose` for the convention, its forward kinematics, the training targets and
the ``smplx`` bridge, all re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from motion_env.rotations import cont6d_to_matrix, matrix_to_cont6d
from motion_env.skeleton import FPS, NUM_JOINTS, NUM_SMPL_JOINTS, PARENTS
from reward_models.smpl_fit import fit_smpl
from reward_models.smpl_pose import (
    IDENTITY_6D,
    NUM_SLOTS,
    ROOT_SLOT,
    SMPLBody,
    check_joints,
    frame_mask,
    global_forward_kinematics,
    global_to_local,
    identity_rot6d,
    pack_rot6d,
    smpl_targets,
    smpl_to_joints,
    smplx_forward,
)

__all__ = [
    "IDENTITY_6D",
    "NUM_SLOTS",
    "ROOT_SLOT",
    "JointsToSMPL",
    "JointsToSMPLConfig",
    "JointsToSMPLOutput",
    "SMPLBody",
    "fit_smpl",
    "global_forward_kinematics",
    "global_to_local",
    "identity_rot6d",
    "pack_rot6d",
    "smpl_targets",
    "smpl_to_joints",
    "smplx_forward",
]


class JointsToSMPLConfig(PretrainedConfig):
    """Configuration of :class:`JointsToSMPL`.

    Args:
        conv_channels: channels of the spatial Conv1D layers (over the 22 joints of a frame).
        conv_layers: number of spatial Conv1D layers.
        kernel_size: kernel of the spatial convolutions (odd).
        hidden_size: width of the per-frame embedding fed to the LSTM.
        lstm_hidden_size: hidden units of the LSTM, per direction.
        lstm_layers: stacked LSTM layers.
        bidirectional: read the clip both ways (each frame sees its future too).
        rotation_loss_weight: weight of the mean squared error of the 24 6D rotations.
        joint_loss_weight: weight of the forward-kinematics joint error (mean per-joint position
            error over the 22 joints, metres).
    """

    model_type = "joints_to_smpl"

    def __init__(
        self,
        conv_channels: int = 32,
        conv_layers: int = 2,
        kernel_size: int = 3,
        hidden_size: int = 192,
        lstm_hidden_size: int = 128,
        lstm_layers: int = 1,
        bidirectional: bool = True,
        rotation_loss_weight: float = 1.0,
        joint_loss_weight: float = 10.0,
        **kwargs,
    ):
        sizes = {"conv_channels": conv_channels, "conv_layers": conv_layers, "hidden_size": hidden_size,
                 "lstm_hidden_size": lstm_hidden_size, "lstm_layers": lstm_layers}  # fmt: skip
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1 (same-size convolution over joints), got {kernel_size}")
        if rotation_loss_weight < 0 or joint_loss_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got rotation_loss_weight={rotation_loss_weight}, "
                             f"joint_loss_weight={joint_loss_weight}")  # fmt: skip
        self.conv_channels = conv_channels
        self.conv_layers = conv_layers
        self.kernel_size = kernel_size
        self.hidden_size = hidden_size
        self.lstm_hidden_size = lstm_hidden_size
        self.lstm_layers = lstm_layers
        self.bidirectional = bidirectional
        self.rotation_loss_weight = rotation_loss_weight
        self.joint_loss_weight = joint_loss_weight
        super().__init__(**kwargs)


@dataclass
class JointsToSMPLOutput(ModelOutput):
    """Output of :meth:`JointsToSMPL.forward`.

    Args:
        loss: ``rotation_loss_weight * rotation_loss + joint_loss_weight * joint_loss`` (with labels).
        rotations: ``(B, T, 25, 6)`` ``rot6d``; padded frames hold the rest pose at the origin.
        rotation_loss: mean squared error of the 24 6D rotations against the labels, valid frames.
        joint_loss: mean per-joint position error (metres) of the forward kinematics of
            ``rotations`` against the input joints, 22 joints, valid frames.
    """

    loss: torch.FloatTensor | None = None
    rotations: torch.FloatTensor | None = None
    rotation_loss: torch.FloatTensor | None = None
    joint_loss: torch.FloatTensor | None = None


def converter_inputs(joints: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the converter reads from joints ``(B, T, 22, 3)``, invariant to the clip's place on the floor.

    Returns per-joint features ``(B, T, 22, 6)`` (position relative to the pelvis, offset from the
    parent joint) and the root trajectory ``(B, T, 4)`` (pelvis height, pelvis velocity in m/s,
    from the previous frame; frame 0 takes frame 1's when the row has one).
    """
    pelvis = joints[..., 0, :]  # (B, T, 3)
    relative = joints - pelvis[..., None, :]  # (B, T, 22, 3)
    bones = torch.cat([torch.zeros_like(joints[..., :1, :]), joints[..., 1:, :] - joints[..., PARENTS[1:NUM_JOINTS], :]],
                      dim=-2)  # fmt: skip
    velocity = torch.zeros_like(pelvis)
    if pelvis.shape[-2] > 1:
        velocity[..., 1:, :] = (pelvis[..., 1:, :] - pelvis[..., :-1, :]) * FPS
        velocity[..., 0, :] = velocity[..., 1, :] * (lengths[:, None] > 1)  # frame 0 has no past
    return torch.cat([relative, bones], dim=-1), torch.cat([pelvis[..., 1:2], velocity], dim=-1)


def reverse_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first ``lengths[b]`` steps of ``x`` ``(B, T, C)``; padding stays at the end."""
    t = torch.arange(x.shape[1], device=x.device)
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    return x.gather(1, index[..., None].expand_as(x))


class MaskedLSTM(nn.Module):
    """A (bidirectional) LSTM over right-padded rows whose valid steps never see the padding.

    The backward direction reads each row's valid steps reversed (padding still last) rather than
    a packed sequence: the same result, without the per-step gradient buffers packing costs on CPU.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool):
        super().__init__()
        directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            nn.ModuleList(nn.LSTM(input_size if i == 0 else directions * hidden_size, hidden_size, batch_first=True)
                          for _ in range(directions))
            for i in range(num_layers)
        )  # fmt: skip

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, C), ``lengths`` (B,) -> (B, T, directions * hidden_size)."""
        for layer in self.layers:
            outputs = [layer[0](x)[0]]  # (B, T, H): trailing padding cannot reach earlier steps
            if len(layer) == 2:
                outputs.append(reverse_valid(layer[1](reverse_valid(x, lengths))[0], lengths))
            x = torch.cat(outputs, dim=-1)
        return x


class JointsToSMPL(PreTrainedModel):
    """The converter ``g`` of Appendix A: joints ``(B, T, 22, 3)`` -> ``rot6d`` ``(B, T, 25, 6)``.

    Per frame, Conv1D layers run along the joint axis (22 joints, 6 channels each: position
    relative to the pelvis and offset from the parent); their flattened output, with the root
    trajectory (height and velocity, so the clip's place on the floor plane does not matter), is
    embedded and read over time by an LSTM; a linear head gives each joint's *global* rotation
    (6D, a residual from the rest pose, made exact by Gram-Schmidt), returned as local rotations
    ``G_parent^T G_j``. Predicting global rotations, a bone's direction depends on one output
    instead of on every rotation above it, so errors do not pile up along the limbs. Slot 24 (the
    pelvis position) is not predicted: it is copied from the input, so it is exact.
    """

    config_class = JointsToSMPLConfig
    base_model_prefix = "joints_to_smpl"
    main_input_name = "joints"

    def __init__(self, config: JointsToSMPLConfig):
        super().__init__(config)
        c, k = config.conv_channels, config.kernel_size
        self.convs = nn.ModuleList(
            nn.Conv1d(6 if i == 0 else c, c, k, padding=k // 2) for i in range(config.conv_layers)
        )
        self.embed = nn.Linear(NUM_JOINTS * c + 4, config.hidden_size)
        self.lstm = MaskedLSTM(config.hidden_size, config.lstm_hidden_size, config.lstm_layers, config.bidirectional)
        directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(directions * config.lstm_hidden_size, NUM_SMPL_JOINTS * 6)
        self.post_init()

    def _init_weights(self, module):
        # PyTorch's own initialisation for every layer: the transformers N(0, 0.02) default is too
        # small for a stack of convolutions without normalisation.
        if isinstance(module, (nn.Conv1d, nn.Linear, nn.LSTM)):
            module.reset_parameters()
        if module is getattr(self, "head", None):
            nn.init.zeros_(module.bias)  # start at the rest pose

    def forward(self, joints: torch.Tensor, lengths: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        """Convert a batch; with ``labels`` ``(B, T, 25, 6)`` also return the training loss.

        Args:
            joints: ``(B, T, 22, 3)`` HumanML3D joints in metres.
            lengths: ``(B,)`` valid frames per row (all ``T`` by default); padded frames do not
                change the valid frames' output (the LSTM never reads them).
            labels: ``(B, T, 25, 6)`` target ``rot6d`` (slot 24 is not used in the loss).
        """
        joints = check_joints(joints)
        if joints.ndim != 4:
            raise ValueError(f"joints must have shape (B, T, {NUM_JOINTS}, 3), got {tuple(joints.shape)}")
        joints = joints.to(self.dtype)
        B, T = joints.shape[:2]
        mask = frame_mask(lengths, B, T, joints.device)  # (B, T)
        spatial, trajectory = converter_inputs(joints, mask.sum(1))  # (B, T, 22, 6), (B, T, 4)

        x = spatial.reshape(B * T, NUM_JOINTS, 6).transpose(1, 2)  # (BT, 6, 22)
        for conv in self.convs:
            x = torch.relu(conv(x))  # (BT, C, 22)
        x = torch.cat([x.reshape(B, T, -1), trajectory], dim=-1)  # (B, T, 22C + 4)
        x = torch.relu(self.embed(x))  # (B, T, H)
        x = self.lstm(x, mask.sum(1))  # (B, T, directions * lstm_hidden_size)
        residual = self.head(x).reshape(B, T, NUM_SMPL_JOINTS, 6)
        global_rots = cont6d_to_matrix(residual + residual.new_tensor(IDENTITY_6D))  # (B, T, 24, 3, 3)
        cont6d = matrix_to_cont6d(global_to_local(global_rots))  # (B, T, 24, 6) local
        rotations = pack_rot6d(cont6d, joints[..., 0, :])  # (B, T, 25, 6)
        rotations = torch.where(
            mask[..., None, None], rotations, identity_rot6d((B, T), rotations.dtype, joints.device)
        )

        if labels is None:
            return JointsToSMPLOutput(rotations=rotations)
        labels = torch.as_tensor(labels, dtype=rotations.dtype, device=rotations.device)
        if labels.shape != rotations.shape:
            raise ValueError(
                f"labels must have shape {tuple(rotations.shape)} (B, T, 25, 6), got {tuple(labels.shape)}"
            )
        rotation_loss = (cont6d - labels[..., :NUM_SMPL_JOINTS, :]).pow(2).mean((-1, -2))[mask].mean()
        fk = global_forward_kinematics(global_rots, joints[..., 0, :])[..., :NUM_JOINTS, :]  # (B, T, 22, 3)
        joint_loss = (fk - joints).norm(dim=-1).mean(-1)[mask].mean()
        loss = self.config.rotation_loss_weight * rotation_loss + self.config.joint_loss_weight * joint_loss
        return JointsToSMPLOutput(loss=loss, rotations=rotations, rotation_loss=rotation_loss, joint_loss=joint_loss)

    @torch.no_grad()
    def convert(self, joints, lengths=None):
        """``rot6d`` of joints ``(T, 22, 3)`` or ``(B, T, 22, 3)`` (numpy or torch), without gradients.

        Returns a float32 tensor ``(T, 25, 6)`` or ``(B, T, 25, 6)`` on the device of ``joints``
        (numpy for numpy input).
        """
        as_numpy = isinstance(joints, np.ndarray)
        joints = check_joints(joints)
        single = joints.ndim == 3
        batch = joints[None] if single else joints
        if lengths is not None and single:
            lengths = torch.as_tensor(lengths).reshape(1)
        rotations = self(batch.to(self.device), lengths).rotations.float().to(joints.device)
        rotations = rotations[0] if single else rotations
        return rotations.numpy() if as_numpy else rotations
