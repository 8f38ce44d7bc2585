"""Built-in default data: drawn flowers in the competition layout, generated on demand into the cache.

Six classes, each a distinct kind of drawing (petal count, shape, colour, centre) with random
position, size, rotation, colour jitter, background and clutter, so a model has something real
to learn and the task is not trivial. Deterministic for a given seed and size.
"""
from __future__ import annotations

import hashlib
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from petalnet.data.files import cache_dir
from petalnet.data.writer import LayoutWriter, jpeg_bytes

VERSION = 1

# competition index -> (petals, petal length, petal width (fraction of length), petal RGB, centre RGB, centre size)
FLOWERS = {
    48: (14, 1.00, 0.22, (245, 245, 240), (240, 200, 30), 0.28),   # daisy
    49: (44, 0.95, 0.07, (250, 215, 20), (235, 190, 20), 0.22),    # common dandelion
    53: (22, 0.85, 0.25, (250, 200, 10), (90, 55, 20), 0.55),      # sunflower
    67: (3, 1.00, 0.55, (120, 60, 190), (240, 220, 80), 0.12),     # iris
    73: (9, 0.60, 0.80, (200, 20, 45), (150, 10, 30), 0.35),       # rose
    102: (6, 0.90, 0.45, (240, 110, 150), (120, 160, 60), 0.10),   # common tulip
}
SPLITS = {"train": 80, "val": 20, "test": 15}   # images per class


def _jitter(rgb, rng, amount=30):
    return tuple(int(np.clip(c + rng.normal(0, amount / 2), 0, 255)) for c in rgb)


def draw_flower(label: int, size: int, rng: np.random.Generator) -> Image.Image:
    petals, length, width, petal_rgb, centre_rgb, centre = FLOWERS[label]
    top, bottom = _jitter((70, 120, 60), rng, 60), _jitter((30, 70, 30), rng, 50)
    ramp = np.linspace(0, 1, size)[:, None, None]
    bg = (np.array(top) * (1 - ramp) + np.array(bottom) * ramp) * np.ones((1, size, 1))
    bg += rng.normal(0, 8, bg.shape)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 6)):   # clutter: leaves and stems
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(0.05, 0.15) * size
        d.ellipse((x - r, y - r / 3, x + r, y + r / 3), fill=_jitter((40, 110, 40), rng, 40))
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    radius = rng.uniform(0.22, 0.36) * size
    d.line((cx, cy, cx + rng.normal(0, size * 0.1), size), fill=(40, 100, 35), width=max(2, size // 40))
    rot = rng.uniform(0, 2 * math.pi)
    colour = _jitter(petal_rgb, rng, 40)
    plen, pwid = radius * length, radius * length * width
    for k in range(petals):
        a = rot + 2 * math.pi * k / petals + rng.normal(0, 0.05)
        mx, my = cx + math.cos(a) * plen / 2, cy + math.sin(a) * plen / 2
        # a petal is an ellipse along the ray; a polygon keeps it rotated
        pts = [(mx + math.cos(a) * plen / 2 * math.cos(t) - math.sin(a) * pwid / 2 * math.sin(t),
                my + math.sin(a) * plen / 2 * math.cos(t) + math.cos(a) * pwid / 2 * math.sin(t))
               for t in np.linspace(0, 2 * math.pi, 16)]
        d.polygon(pts, fill=_jitter(colour, rng, 12), outline=_jitter(colour, rng, 40))
    cr = radius * centre
    d.ellipse((cx - cr, cy - cr, cx + cr, cy + cr), fill=_jitter(centre_rgb, rng, 25))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))


def _records(split: str, size: int, seed: int) -> list[dict]:
    records = []
    for s, (name, per_class) in enumerate(SPLITS.items()):
        if name != split:
            continue
        for c, label in enumerate(FLOWERS):
            for i in range(per_class):
                rng = np.random.default_rng([seed, s, c, i])
                jpeg = jpeg_bytes(draw_flower(label, size, rng), quality=90)
                rid = hashlib.sha1(f"{seed}/{split}/{label}/{i}".encode()).hexdigest()[:9]
                records.append({"image": jpeg, "class": label, "id": rid} if split != "test"
                               else {"image": jpeg, "id": rid})
    order = np.random.default_rng([seed, 99]).permutation(len(records))
    return [records[i] for i in order]


def synthetic_data(size: int = 128, seed: int = 0, root: str | None = None) -> str:
    """Folder holding ``tfrecords-jpeg-SxS/{train,val,test}`` of drawn flowers, generated once."""
    root = root or cache_dir("synthetic", f"v{VERSION}-seed{seed}-{size}px")
    final = os.path.join(root, f"tfrecords-jpeg-{size}x{size}")
    if not os.path.isdir(final):
        with LayoutWriter(root, size, force=True) as layout:
            for split in SPLITS:
                layout.write(split, _records(split, size, seed), shard_size=256)
    return root
