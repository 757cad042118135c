"""Draw joint motions as stick figures: GIF, MP4, side-by-side GIF, a contact sheet, and a CLI over a dataset.

Frames are drawn with PIL, in a fixed palette, from one camera per clip: an orthographic view
from the front-left and above (a body facing +Z shows its front, its left side (+X) on the
right of the picture), framed once so the whole clip (body and floor) stays in view.
Left limbs are red, right limbs blue, the spine grey; the floor y=0 is a grid under the body's
path, with the pelvis trail and the body's shadow on it.

Usage::

    python -m motion_env.render --data DIR --num 8 --out OUTDIR [--split test] [--ids ID ...] [--mp4]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from motion_env.export import atomic_path
from motion_env.skeleton import FPS, JOINT_INDEX, JOINT_NAMES, KINEMATIC_CHAIN, NUM_JOINTS

CAMERA_AZIMUTH = math.radians(40.0)  # about +Y, from +Z (the body's front) toward +X (its left)
CAMERA_ELEVATION = math.radians(32.0)
FLOOR_MARGIN = 0.4  # metres of floor around the body's xz extent
HEAD_RADIUS = 0.09  # metres

# Fixed palette: frames are drawn straight in "P" mode, no per-frame quantisation.
PALETTE = {
    "background": (255, 255, 255),
    "floor": (243, 243, 240),
    "grid": (208, 208, 204),
    "shadow": (214, 214, 210),
    "trail": (235, 150, 40),
    "text": (20, 20, 20),
    "spine": (95, 95, 95),
    "left_leg": (200, 30, 35),
    "left_arm": (245, 95, 70),
    "right_leg": (30, 60, 190),
    "right_arm": (70, 140, 235),
    "head": (255, 255, 255),
}
_INK = {name: i for i, name in enumerate(PALETTE)}
# Each kinematic chain named by its end joint.
_CHAIN_COLOUR = {"right_foot": "right_leg", "left_foot": "left_leg", "head": "spine",
                 "right_wrist": "right_arm", "left_wrist": "left_arm"}  # fmt: skip


def _palette_image(size: tuple[int, int]) -> Image.Image:
    image = Image.new("P", size, _INK["background"])
    image.putpalette([c for rgb in PALETTE.values() for c in rgb])
    return image


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _check_joints(joints, name: str = "joints") -> np.ndarray:
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3) or len(joints) == 0:
        raise ValueError(f"{name} must have shape (T, {NUM_JOINTS}, 3) with T >= 1, got {joints.shape}")
    if not np.isfinite(joints).all():
        raise ValueError(f"{name} contains NaN or Inf (first at frame {np.argwhere(~np.isfinite(joints))[0][0]})")
    return joints


def _camera_axes() -> np.ndarray:
    """``(3, 3)`` rows: screen right, screen up, toward the camera."""
    toward = np.array([
        math.cos(CAMERA_ELEVATION) * math.sin(CAMERA_AZIMUTH),
        math.sin(CAMERA_ELEVATION),
        math.cos(CAMERA_ELEVATION) * math.cos(CAMERA_AZIMUTH),
    ])  # fmt: skip
    right = np.cross([0.0, 1.0, 0.0], toward)
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(toward, right), toward])


def _wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; the last line gets an ellipsis if text is left over."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        while lines[-1] and font.getlength(lines[-1] + "...") > width:
            lines[-1] = lines[-1][:-1]
        lines[-1] += "..."
    return lines


class _Scene:
    """One clip seen from the fixed camera: the static floor, and a method to draw each frame."""

    def __init__(self, joints: np.ndarray, size: tuple[int, int], caption: str | None, fps: float):
        self.joints, self.size, self.fps = joints, size, fps
        width, height = size
        self.font = _font(max(9, round(min(size) / 28)))
        line_height = self.font.getbbox("Ag")[3] + 2
        self.caption_lines = _wrap(caption, self.font, width - 8, max_lines=3) if caption else []
        top = 4 + line_height * len(self.caption_lines) + 4 * bool(self.caption_lines)
        self.time_height = line_height + 2
        self.line_width = max(2, round(min(size) / 110))

        self.grid_lines, floor_corners = self._floor(joints)
        axes = _camera_axes()
        screen = np.concatenate([joints.reshape(-1, 3), floor_corners]) @ axes[:2].T  # (N, 2)
        low, high = screen.min(0), screen.max(0)
        box_w, box_h = width - 8, height - top - self.time_height - 4
        self.scale = min(box_w / max(high[0] - low[0], 1e-6), box_h / max(high[1] - low[1], 1e-6))
        self.centre = (low + high) / 2
        self.pixel_centre = np.array([width / 2, top + box_h / 2 + 2])
        self.axes = axes
        self.background = self._draw_background(floor_corners)

    @staticmethod
    def _floor(joints: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
        """Grid lines on y=0 over the whole clip's xz extent, and the floor's four corners."""
        xz = joints[..., [0, 2]].reshape(-1, 2)
        low, high = xz.min(0) - FLOOR_MARGIN, xz.max(0) + FLOOR_MARGIN
        spacing = 0.5 if (high - low).max() <= 8 else 1.0
        low, high = np.floor(low / spacing) * spacing, np.ceil(high / spacing) * spacing
        lines = []
        for x in np.arange(low[0], high[0] + spacing / 2, spacing):
            lines.append((np.array([x, 0.0, low[1]]), np.array([x, 0.0, high[1]])))
        for z in np.arange(low[1], high[1] + spacing / 2, spacing):
            lines.append((np.array([low[0], 0.0, z]), np.array([high[0], 0.0, z])))
        corners = np.array([[low[0], 0, low[1]], [high[0], 0, low[1]], [high[0], 0, high[1]], [low[0], 0, high[1]]])
        return lines, corners

    def project(self, points: np.ndarray) -> np.ndarray:
        """``(..., 3)`` world points to ``(..., 2)`` pixel coordinates."""
        screen = (points @ self.axes[:2].T - self.centre) * self.scale
        return self.pixel_centre + screen * np.array([1.0, -1.0])

    def depth(self, points: np.ndarray) -> np.ndarray:
        """Distance toward the camera: larger is nearer."""
        return points @ self.axes[2]

    def _draw_background(self, floor_corners: np.ndarray) -> Image.Image:
        image = _palette_image(self.size)
        draw = ImageDraw.Draw(image)
        draw.polygon([tuple(p) for p in self.project(floor_corners)], fill=_INK["floor"])
        for start, end in self.grid_lines:
            draw.line([tuple(p) for p in self.project(np.stack([start, end]))], fill=_INK["grid"], width=1)
        line_height = self.font.getbbox("Ag")[3] + 2
        for i, line in enumerate(self.caption_lines):
            draw.text((4, 4 + i * line_height), line, fill=_INK["text"], font=self.font)
        return image

    def draw(self, t: int) -> Image.Image:
        """Frame ``t`` as a "P"-mode image."""
        image = self.background.copy()
        draw = ImageDraw.Draw(image)
        pose = self.joints[t]  # (22, 3)
        shadow = pose * np.array([1.0, 0.0, 1.0])
        for chain in KINEMATIC_CHAIN:
            draw.line([tuple(p) for p in self.project(shadow[list(chain)])], fill=_INK["shadow"], width=self.line_width)
        trail = self.joints[: t + 1, 0] * np.array([1.0, 0.0, 1.0])  # pelvis on the floor
        if t > 0:
            draw.line([tuple(p) for p in self.project(trail)], fill=_INK["trail"], width=max(1, self.line_width - 1))
        self._draw_body(draw, pose)
        label = f"{t / self.fps:.2f} s"
        width, height = self.size
        corner = (width - 4 - self.font.getlength(label), height - self.time_height)
        draw.text(corner, label, fill=_INK["text"], font=self.font)
        return image

    def _draw_body(self, draw: ImageDraw.ImageDraw, pose: np.ndarray) -> None:
        """Bones far to near (painter's order), the head as a disc."""
        pixels = self.project(pose)  # (22, 2)
        depth = self.depth(pose)  # (22,)
        items = []  # (depth, kind, payload)
        for chain in KINEMATIC_CHAIN:
            ink = _INK[_CHAIN_COLOUR[JOINT_NAMES[chain[-1]]]]
            for parent, child in zip(chain[:-1], chain[1:]):
                items.append(((depth[parent] + depth[child]) / 2, ink, (parent, child)))
        head = JOINT_INDEX["head"]
        items.append((depth[head], None, head))
        radius_joint = self.line_width * 0.6
        for _, ink, payload in sorted(items, key=lambda item: item[0]):
            if ink is None:
                x, y = pixels[payload]
                r = max(3.0, HEAD_RADIUS * self.scale)
                box = (x - r, y - r, x + r, y + r)
                draw.ellipse(box, fill=_INK["head"], outline=_INK["spine"], width=self.line_width)
                continue
            a, b = pixels[payload[0]], pixels[payload[1]]
            draw.line((tuple(a), tuple(b)), fill=ink, width=self.line_width)
            for x, y in (a, b):
                draw.ellipse((x - radius_joint, y - radius_joint, x + radius_joint, y + radius_joint), fill=ink)


def render_frames(joints, *, caption: str | None = None, fps: float = FPS, size: tuple[int, int] = (320, 320)):
    """The frames of a clip ``(T, 22, 3)`` as a list of "P"-mode PIL images (shared palette)."""
    joints = _check_joints(joints)
    width, height = size
    if width < 32 or height < 32:
        raise ValueError(f"size must be at least (32, 32) pixels, got {size}")
    scene = _Scene(joints, (int(width), int(height)), caption, fps)
    return [scene.draw(t) for t in range(len(joints))]


def render_gif(joints, path: str | os.PathLike, *, caption: str | None = None, fps: float = FPS,
               size: tuple[int, int] = (320, 320)) -> Path:  # fmt: skip
    """Write a looping GIF of a clip ``(T, 22, 3)`` (metres, Y up); returns ``path``."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    frames = render_frames(joints, caption=caption, fps=fps, size=size)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=round(1000 / fps), loop=0)  # fmt: skip
    return Path(path)


def render_comparison_gif(clips: Sequence[tuple[np.ndarray, str | None]], path: str | os.PathLike, *,
                          fps: float = FPS, size: tuple[int, int] = (320, 320), title: str | None = None) -> Path:  # fmt: skip
    """Write one looping GIF of clips side by side, e.g. a base and a fine-tuned motion of one prompt.

    Args:
        clips: ``(joints (T, 22, 3), caption)`` per panel, left to right; each panel has its own camera.
        path: the GIF to write (atomically; its folder must exist).
        fps: frame rate of every clip.
        size: ``(width, height)`` of one panel; the GIF is ``len(clips) × width`` wide.
        title: a line across the top of all panels (e.g. the prompt), or None.

    The GIF runs as long as the longest clip; shorter clips hold their last frame.
    """
    if len(clips) == 0:
        raise ValueError("render_comparison_gif: clips is empty")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    panels = [render_frames(joints, caption=caption, fps=fps, size=size) for joints, caption in clips]
    width, height = panels[0][0].size
    font = _font(max(9, round(min(width, height) / 24)))
    title_lines = _wrap(title, font, len(panels) * width - 8, max_lines=2) if title else []
    line_height = font.getbbox("Ag")[3] + 2
    top = 6 + line_height * len(title_lines) if title_lines else 0

    # Everything but the panels is drawn once; each frame pastes the panels onto a copy.
    canvas = _palette_image((len(panels) * width, top + height))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((4, 3 + i * line_height), line, fill=_INK["text"], font=font)
    frames = []
    for t in range(max(len(panel) for panel in panels)):
        frame = canvas.copy()
        for i, panel in enumerate(panels):
            frame.paste(panel[min(t, len(panel) - 1)], (i * width, top))
        separators = ImageDraw.Draw(frame)
        for i in range(1, len(panels)):
            separators.line([(i * width, top), (i * width, top + height)], fill=_INK["grid"], width=1)
        frames.append(frame)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=round(1000 / fps), loop=0)  # fmt: skip
    return Path(path)


def _ffmpeg_exe() -> str | None:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


def mp4_available() -> bool:
    """Whether :func:`render_mp4` can encode: imageio-ffmpeg is installed or ``ffmpeg`` is on PATH."""
    return _ffmpeg_exe() is not None


def render_mp4(joints, path: str | os.PathLike, *, caption: str | None = None, fps: float = FPS,
               size: tuple[int, int] = (320, 320)) -> Path:  # fmt: skip
    """Write an H.264 MP4 of the same frames as :func:`render_gif`; needs an ffmpeg encoder."""
    exe = _ffmpeg_exe()
    if exe is None:
        raise RuntimeError(
            "render_mp4 needs an MP4 encoder: neither the imageio-ffmpeg package nor an `ffmpeg` binary on PATH "
            "was found (pip install imageio-ffmpeg, or install ffmpeg)"
        )
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    frames = render_frames(joints, caption=caption, fps=fps, size=size)
    raw = b"".join(frame.convert("RGB").tobytes() for frame in frames)
    width, height = frames[0].size
    with atomic_path(path) as tmp:
        command = [exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
                   "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                   "-f", "mp4", str(tmp)]  # fmt: skip
        result = subprocess.run(command, input=raw, capture_output=True)
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg ({exe}) failed writing {path}: {result.stderr.decode(errors='replace')[-500:]}")
    return Path(path)


def contact_sheet(clips: Sequence, path: str | os.PathLike, *, frames_per_clip: int = 5,
                  captions: Sequence[str] | None = None, cell_size: int = 128) -> Path:  # fmt: skip
    """One PNG, a row per clip of ``frames_per_clip`` evenly spaced frames, its caption above it."""
    if len(clips) == 0:
        raise ValueError("contact_sheet: clips is empty")
    if frames_per_clip < 1:
        raise ValueError(f"contact_sheet: frames_per_clip must be >= 1, got {frames_per_clip}")
    if captions is not None and len(captions) != len(clips):
        raise ValueError(f"contact_sheet: {len(captions)} captions for {len(clips)} clips")
    font = _font(11)
    caption_height = font.getbbox("Ag")[3] + 4
    row_height = caption_height + cell_size
    sheet = _palette_image((frames_per_clip * cell_size, len(clips) * row_height))
    draw = ImageDraw.Draw(sheet)
    for row, clip in enumerate(clips):
        joints = _check_joints(clip, name=f"clips[{row}]")
        scene = _Scene(joints, (cell_size, cell_size), None, FPS)
        top = row * row_height
        if captions is not None:
            text = _wrap(captions[row], font, sheet.width - 8, max_lines=1)
            draw.text((4, top + 2), text[0] if text else "", fill=_INK["text"], font=font)
        for col, t in enumerate(np.linspace(0, len(joints) - 1, frames_per_clip).round().astype(int)):
            sheet.paste(scene.draw(int(t)), (col * cell_size, top + caption_height))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return Path(path)


# ---------------------------------------------------------------------------------------- CLI


def _read_caption(text_path: Path) -> str:
    """The caption part of the first line of a HumanML3D ``texts/<id>.txt``."""
    lines = [line for line in text_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{text_path} has no captions")
    return lines[0].split("#")[0].strip()


def _select_ids(data: Path, split: str, num: int, ids: list[str] | None, seed: int) -> list[str]:
    if ids:
        return ids
    split_path = data / f"{split}.txt"
    if not split_path.is_file():
        raise FileNotFoundError(f"split file {split_path} not found (use --split or --ids)")
    available = [line.strip() for line in split_path.read_text().splitlines() if line.strip()]
    if not available:
        raise ValueError(f"split file {split_path} lists no ids")
    chosen = np.random.default_rng(seed).choice(len(available), size=min(num, len(available)), replace=False)
    return [available[i] for i in chosen]


def _load_clip(data: Path, clip_id: str) -> tuple[np.ndarray, str]:
    joints_path, text_path = data / "new_joints" / f"{clip_id}.npy", data / "texts" / f"{clip_id}.txt"
    for needed in (joints_path, text_path):
        if not needed.is_file():
            raise FileNotFoundError(f"clip {clip_id!r}: {needed} not found")
    joints = np.load(joints_path, allow_pickle=False)
    return _check_joints(joints, name=str(joints_path)), _read_caption(text_path)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m motion_env.render", description=textwrap.dedent(__doc__ or ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--data", type=Path, required=True, help="dataset in HumanML3D layout (new_joints/, texts/)")
    parser.add_argument("--out", type=Path, required=True, help="directory for <id>.gif and contact_sheet.png")
    parser.add_argument("--num", type=int, default=8, help="number of clips drawn at random from the split")
    parser.add_argument("--split", default="test", help="split file <DIR>/<split>.txt to draw ids from")
    parser.add_argument("--ids", nargs="+", default=None, help="render these ids instead of a random draw")
    parser.add_argument("--mp4", action="store_true", help="also write <id>.mp4 (needs imageio-ffmpeg or ffmpeg)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draw")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"--data: directory {args.data} does not exist")
    if args.num < 1:
        parser.error(f"--num must be >= 1, got {args.num}")
    if args.mp4 and not mp4_available():
        parser.error("--mp4: no encoder found; pip install imageio-ffmpeg or put ffmpeg on PATH")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    args = _parse_args(argv)
    try:
        ids = _select_ids(args.data, args.split, args.num, args.ids, args.seed)
        args.out.mkdir(parents=True, exist_ok=True)
        clips, captions = [], []
        for clip_id in tqdm(ids, desc="render", unit="clip"):
            joints, caption = _load_clip(args.data, clip_id)
            render_gif(joints, args.out / f"{clip_id}.gif", caption=caption)
            if args.mp4:
                render_mp4(joints, args.out / f"{clip_id}.mp4", caption=caption)
            clips.append(joints)
            captions.append(f"{clip_id}: {caption}")
        contact_sheet(clips, args.out / "contact_sheet.png", captions=captions)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(ids)} clips and contact_sheet.png to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
