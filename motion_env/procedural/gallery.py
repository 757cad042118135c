"""A contact sheet with one clip of every primitive: ``python -m motion_env.procedural.gallery --out F.png``"""

from __future__ import annotations

import argparse

import numpy as np

from motion_env.procedural.base import Style
from motion_env.procedural.compose import synthesize
from motion_env.procedural.dataset import PRIMITIVES
from motion_env.render import contact_sheet
from motion_env.skeleton import NUM_JOINTS


def gallery_clips(seed: int = 0, names: list[str] | None = None) -> tuple[list[np.ndarray], list[str]]:
    """One synthesised clip per primitive (joints (T, 22, 3)) and a caption for each."""
    rng = np.random.default_rng(seed)
    clips, captions = [], []
    for name in names or sorted(PRIMITIVES):
        primitive = PRIMITIVES[name]
        params = primitive.sample(rng)
        clip = synthesize([(primitive, params)], Style())
        clips.append(clip.joints[:, :NUM_JOINTS])
        captions.append(f"{name}: {primitive.phrases(params)[0]}")
    return clips, captions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=6, help="frames shown per clip")
    parser.add_argument("--names", nargs="*", default=None, help="only these primitives")
    args = parser.parse_args(argv)
    clips, captions = gallery_clips(args.seed, args.names)
    contact_sheet(clips, args.out, frames_per_clip=args.frames, captions=captions)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
