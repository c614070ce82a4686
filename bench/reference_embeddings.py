"""Write the reference embeddings a rebuilt CLIP tower is checked against (fakescope/zoo).

Run once by a maintainer, with the original file the built-in detectors were trained with::

    python bench/reference_embeddings.py --onnx ../shared/weights/clip_vit_b16_openai_visual.int8.onnx

Four small images (crops of scikit-image's bundled sample photos, and a synthetic gradient) and
what the original makes of them (final embedding, and the CLS token after every block) go into
``src/fakescope/zoo/<reference>.npz``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from fakescope.embed.fetch import reference_path, write_reference
from fakescope.embed.weights import RECIPES
from fakescope.utils import file_digest

SIDE = 64


def reference_images() -> np.ndarray:
    """Four ``SIDE`` x ``SIDE`` RGB images: three photo crops and a gradient."""
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    out = [np.asarray(Image.fromarray(p).resize((SIDE, SIDE), Image.BICUBIC)) for p in photos]
    ramp = np.linspace(0, 255, SIDE, dtype=np.float32)
    out.append(
        np.stack(
            [np.add.outer(ramp, ramp) / 2, np.tile(ramp, (SIDE, 1)), np.full((SIDE, SIDE), 90.0)],
            -1,
        ).astype(np.uint8)
    )
    return np.stack(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--onnx", required=True, help="the original CLIP image tower")
    args = p.parse_args()
    recipe = RECIPES[Path(args.onnx).name]
    if file_digest(args.onnx) != recipe.sha256:
        raise SystemExit(f"{args.onnx} is not the original file (sha256 {recipe.sha256})")
    dest = write_reference(args.onnx, reference_images(), reference_path(recipe))
    print(f"wrote {dest} ({dest.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
