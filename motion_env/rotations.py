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
    "euler_to_matrix",
    "matrix_to_euler",
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


# The quaternion basics sit on hot loops (forward kinematics, feature extraction, the procedural
# data); they are written with indexing and arithmetic only, so numpy inputs stay in numpy.
def _stack(parts, like):
    if isinstance(like, torch.Tensor):
        return torch.stack(parts, dim=-1)
    shape = parts[0].shape  # arrays or numpy scalars: what indexing an array gives
    if any(p.shape != shape for p in parts):
        return np.stack(parts, axis=-1)  # its error names the mismatch
    out = np.empty(shape + (len(parts),), dtype=np.result_type(*parts))  # half of np.stack's cost on short arrays
    for i, part in enumerate(parts):
        out[..., i] = part
    return out


def _cross(a, b):
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    parts = [ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx]
    return _stack(parts, parts[0])


def quat_normalize(q):
    return q / ((q * q).sum(-1)[..., None] ** 0.5)


def quat_inv(q):
    """Inverse of a unit quaternion (its conjugate)."""
    return _stack([q[..., 0], -q[..., 1], -q[..., 2], -q[..., 3]], q)


def quat_mul(q, r):
    """Hamilton product ``q * r`` (apply ``r`` first, then ``q``), broadcasting."""
    w1, x1, y1, z1 = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    w2, x2, y2, z2 = r[..., 0], r[..., 1], r[..., 2], r[..., 3]
    parts = [
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ]
    return _stack(parts, parts[0])


def quat_rotate(q, v):
    """Rotate 3-vectors ``v`` by unit quaternions ``q`` (broadcasting)."""
    qvec, w = q[..., 1:], q[..., :1]
    uv = _cross(qvec, v)
    uuv = _cross(qvec, uv)
    return v + 2 * (w * uv + uuv)


def quat_between(v0, v1):
    """The shortest rotation taking direction ``v0`` to direction ``v1`` (broadcasting)."""
    axis = _cross(v0, v1)
    w = ((v0**2).sum(-1) * (v1**2).sum(-1)) ** 0.5 + (v0 * v1).sum(-1)
    return quat_normalize(_stack([w, axis[..., 0], axis[..., 1], axis[..., 2]], w))


def quat_to_matrix(q):
    """Rotation matrices ``(..., 3, 3)`` from quaternions (need not be unit)."""
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    two_s = 2.0 / (q * q).sum(-1)
    parts = [
        1 - two_s * (y * y + z * z), two_s * (x * y - z * w), two_s * (x * z + y * w),
        two_s * (x * y + z * w), 1 - two_s * (x * x + z * z), two_s * (y * z - x * w),
        two_s * (x * z - y * w), two_s * (y * z + x * w), 1 - two_s * (x * x + y * y),
    ]  # fmt: skip
    return _stack(parts, parts[0]).reshape(q.shape[:-1] + (3, 3))


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


# Tait-Bryan orders, intrinsic: "ZXY" means R = Rz(a) @ Rx(b) @ Ry(c), the order BVH lists its
# rotation channels in (scipy's upper-case convention).
EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")
_AXIS_INDEX = {"X": 0, "Y": 1, "Z": 2}


def _check_euler_order(order: str) -> None:
    if order not in EULER_ORDERS:
        raise ValueError(f"order must be one of {EULER_ORDERS} (intrinsic, as in BVH channel order), got {order!r}")


def _elemental_rotation(axis: int, angle: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` rotation by ``angle`` ``(...)`` radians about the coordinate axis 0, 1 or 2."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 0:
        rows = ((one, zero, zero), (zero, c, -s), (zero, s, c))
    elif axis == 1:
        rows = ((c, zero, s), (zero, one, zero), (-s, zero, c))
    else:
        rows = ((c, -s, zero), (s, c, zero), (zero, zero, one))
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


@numpy_compatible
def euler_to_matrix(angles: torch.Tensor, order: str) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` from Euler angles ``(..., 3)`` in radians.

    ``order`` is intrinsic: ``"ZXY"`` gives ``Rz(angles[..., 0]) @ Rx(angles[..., 1]) @ Ry(angles[..., 2])``,
    the rotation a BVH joint with channels ``Zrotation Xrotation Yrotation`` describes.
    """
    _check_euler_order(order)
    m = _elemental_rotation(_AXIS_INDEX[order[0]], angles[..., 0])
    for k in (1, 2):
        m = m @ _elemental_rotation(_AXIS_INDEX[order[k]], angles[..., k])
    return m


@numpy_compatible
def matrix_to_euler(m: torch.Tensor, order: str) -> torch.Tensor:
    """Euler angles ``(..., 3)`` in radians, inverse of :func:`euler_to_matrix` for the same ``order``.

    The middle angle is in ``[-pi/2, pi/2]``, the others in ``[-pi, pi]``. At gimbal lock (middle
    angle at +-pi/2) only the sum or difference of the outer angles is defined; the last is set to 0.
    """
    _check_euler_order(order)
    i, j, k = (_AXIS_INDEX[axis] for axis in order)
    sign = 1.0 if (j - i) % 3 == 1 else -1.0  # +1 for the cyclic orders XYZ, YZX, ZXY
    cos_middle = torch.hypot(m[..., i, i], m[..., i, j])
    middle = torch.atan2(sign * m[..., i, k], cos_middle)
    first = torch.atan2(-sign * m[..., j, k], m[..., k, k])
    last = torch.atan2(-sign * m[..., i, j], m[..., i, i])
    # Below sqrt(eps) the outer angles are noise; with last = 0, column j of m is R_i(first) e_j.
    locked = cos_middle < torch.finfo(m.dtype).eps ** 0.5
    first = torch.where(locked, torch.atan2(sign * m[..., k, j], m[..., j, j]), first)
    last = torch.where(locked, torch.zeros_like(last), last)
    return torch.stack((first, middle, last), dim=-1)
