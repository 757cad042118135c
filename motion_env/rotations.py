"""Rotation conversions, batched in torch and callable with numpy arrays.

Conventions (the ones HumanML3D's processing code uses):

* quaternions are ``(w, x, y, z)`` and Hamilton-multiplied;
* a rotation matrix acts on column vectors (``v' = R @ v``);
* the continuous 6D representation is the first two *columns* of the matrix,
  concatenated: ``[R[:, 0], R[:, 1]]``;
* axis-angle is a 3-vector whose norm is the angle in radians.

Every public function accepts either ``torch.Tensor`` or ``numpy.ndarray`` and
returns the same kind it was given, over arbitrary leading batch dimensions.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = [
    "axis_angle_to_matrix",
    "axis_angle_to_quat",
    "cont6d_to_matrix",
    "matrix_to_axis_angle",
    "matrix_to_cont6d",
    "matrix_to_quat",
    "quat_between",
    "quat_inv",
    "quat_mul",
    "quat_normalize",
    "quat_rotate",
    "quat_slerp",
    "quat_to_axis_angle",
    "quat_to_cont6d",
    "quat_to_matrix",
    "cont6d_to_quat",
]


def numpy_compatible(fn):
    """Let a torch function take numpy arrays: convert in, convert the result back."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not any(isinstance(a, np.ndarray) for a in args):
            return fn(*args, **kwargs)
        dtype = np.result_type(*[a.dtype for a in args if isinstance(a, np.ndarray)])
        if not np.issubdtype(dtype, np.floating):
            dtype = np.float64
        torch_args = [torch.from_numpy(np.array(a, dtype=dtype)) if isinstance(a, np.ndarray) else a for a in args]
        out = fn(*torch_args, **kwargs)
        return out.numpy() if isinstance(out, torch.Tensor) else out

    return wrapper


@numpy_compatible
def quat_normalize(q: torch.Tensor) -> torch.Tensor:
    return q / q.norm(dim=-1, keepdim=True)


@numpy_compatible
def quat_inv(q: torch.Tensor) -> torch.Tensor:
    """Inverse of a unit quaternion (its conjugate)."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


@numpy_compatible
def quat_mul(q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``q * r`` (apply ``r`` first, then ``q``)."""
    q, r = torch.broadcast_tensors(q, r)
    w1, x1, y1, z1 = q.unbind(-1)
    w2, x2, y2, z2 = r.unbind(-1)
    return torch.stack(
        (
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ),
        dim=-1,
    )


@numpy_compatible
def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate 3-vectors ``v`` by unit quaternions ``q`` (broadcasting)."""
    q, v = torch.broadcast_tensors(q, torch.cat([torch.zeros_like(v[..., :1]), v], dim=-1))
    qvec, w, v = q[..., 1:], q[..., :1], v[..., 1:]
    uv = torch.linalg.cross(qvec, v, dim=-1)
    uuv = torch.linalg.cross(qvec, uv, dim=-1)
    return v + 2 * (w * uv + uuv)


@numpy_compatible
def quat_between(v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """The shortest rotation taking direction ``v0`` to direction ``v1``."""
    v0, v1 = torch.broadcast_tensors(v0, v1)
    axis = torch.linalg.cross(v0, v1, dim=-1)
    w = torch.sqrt((v0**2).sum(-1, keepdim=True) * (v1**2).sum(-1, keepdim=True)) + (v0 * v1).sum(-1, keepdim=True)
    return quat_normalize(torch.cat([w, axis], dim=-1))


@numpy_compatible
def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    w, x, y, z = q.unbind(-1)
    two_s = 2.0 / (q * q).sum(-1)
    m = torch.stack(
        (
            1 - two_s * (y * y + z * z),
            two_s * (x * y - z * w),
            two_s * (x * z + y * w),
            two_s * (x * y + z * w),
            1 - two_s * (x * x + z * z),
            two_s * (y * z - x * w),
            two_s * (x * z - y * w),
            two_s * (y * z + x * w),
            1 - two_s * (x * x + y * y),
        ),
        dim=-1,
    )
    return m.reshape(q.shape[:-1] + (3, 3))


@numpy_compatible
def matrix_to_quat(m: torch.Tensor) -> torch.Tensor:
    """Rotation matrices to unit quaternions with ``w >= 0`` (numerically stable branch choice)."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Four candidate solutions, each well conditioned when its leading term is large.
    candidates = torch.stack(
        (
            torch.stack((1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01), -1),
            torch.stack((m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20), -1),
            torch.stack((m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21), -1),
            torch.stack((m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22), -1),
        ),
        dim=-2,
    )  # (..., 4, 4)
    leading = torch.stack((1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), -1)
    best = leading.argmax(-1, keepdim=True)
    q = torch.gather(candidates, -2, best[..., None].expand(best.shape + (4,))).squeeze(-2)
    q = quat_normalize(q)
    return torch.where(q[..., :1] < 0, -q, q)


@numpy_compatible
def axis_angle_to_quat(aa: torch.Tensor) -> torch.Tensor:
    angle = aa.norm(dim=-1, keepdim=True)
    half = angle / 2
    # sin(x/2)/x -> 1/2 as x -> 0; use the Taylor form near zero.
    small = angle.abs() < 1e-6
    scale = torch.where(small, 0.5 - angle**2 / 48, torch.sin(half) / torch.where(small, torch.ones_like(angle), angle))
    return torch.cat([torch.cos(half), aa * scale], dim=-1)


@numpy_compatible
def quat_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    q = torch.where(q[..., :1] < 0, -q, q)
    norm = q[..., 1:].norm(dim=-1, keepdim=True)
    half = torch.atan2(norm, q[..., :1])
    angle = 2 * half
    small = angle.abs() < 1e-6
    scale = torch.where(small, 2 + angle**2 / 12, angle / torch.where(small, torch.ones_like(norm), norm))
    return q[..., 1:] * scale


@numpy_compatible
def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    return quat_to_matrix(axis_angle_to_quat(aa))


@numpy_compatible
def matrix_to_axis_angle(m: torch.Tensor) -> torch.Tensor:
    return quat_to_axis_angle(matrix_to_quat(m))


@numpy_compatible
def matrix_to_cont6d(m: torch.Tensor) -> torch.Tensor:
    """First two columns of the matrix, ``[R[:, 0], R[:, 1]]``."""
    return torch.cat([m[..., :, 0], m[..., :, 1]], dim=-1)


@numpy_compatible
def cont6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt back to a rotation matrix; inverse of :func:`matrix_to_cont6d`."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = b2 / b2.norm(dim=-1, keepdim=True)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


@numpy_compatible
def quat_to_cont6d(q: torch.Tensor) -> torch.Tensor:
    return matrix_to_cont6d(quat_to_matrix(q))


@numpy_compatible
def cont6d_to_quat(d6: torch.Tensor) -> torch.Tensor:
    return matrix_to_quat(cont6d_to_matrix(d6))


@numpy_compatible
def quat_slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Spherical interpolation from ``q0`` (t=0) to ``q1`` (t=1) along the shorter arc."""
    t = torch.as_tensor(t, dtype=q0.dtype)
    if t.dim() > 0:
        t = t[..., None]
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-6
    safe = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / safe)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe)
    return quat_normalize(w0 * q0 + w1 * q1)
