"""Training augmentation, named by one string: ops joined by "+", or a preset; run by
albumentations (image bilinear, mask nearest; the result keeps the training size).

Ops:
  scale(a,b)     zoom by a factor drawn uniformly from [a, b] (`RandomScale`)
  jitter(j)      stretch the width by 1 + U(-j, j) in place (`Affine`; bubbliiiing's aspect jitter)
  crop           back to the training size at a random position (`PadIfNeeded` + `RandomCrop`;
                 grey image / ignored mask where a zoomed-out sample is padded); without it,
                 zoomed samples are centre-cropped / padded
  resized_crop   `RandomResizedCrop(scale=(0.5, 1), ratio=(3/4, 4/3))`, as torchvision's
  hflip, vflip   flips with probability 0.5
  hsv(h,s,v)     colour jitter as bubbliiiing's: hue shifted by up to h of the circle,
                 saturation and value scaled by 1 + U(-s, s), 1 + U(-v, v) (`ColorJitter`)
Presets: PRESETS below. Each sample's transform is seeded from the generator passed in
(seeded per sample by (seed, epoch, position)), on a pipeline object owned by the calling
thread, so a sample's augmentation is fixed whichever grain thread runs it: resume is exact.
"""

import re
import threading

import numpy as np

from unet_jax.data.imageio import IGNORE_INDEX, LETTERBOX_FILL

PRESETS = {
    "basic": "resized_crop+hflip",  # what `--augment` alone meant before the op strings
    "standard": "scale(0.5,2)+crop+hflip",
    "bubbliiiing": "jitter(0.3)+scale(0.25,2)+crop+hflip+hsv(0.1,0.7,0.3)",
    "flips": "hflip+vflip",
}
DEFAULTS = {"scale": (0.5, 2.0), "jitter": (0.3,), "hsv": (0.1, 0.7, 0.3)}
OPS = ("scale", "jitter", "crop", "resized_crop", "hflip", "vflip", "hsv")
_OP = re.compile(r"^([a-z_]+)(?:\(([^()]*)\))?$")


def parse(spec: str) -> list[tuple[str, tuple[float, ...]]]:
    """[(op, arguments)] of an augmentation string (a preset name, ops joined by "+",
    "" / "none" / "false" for none, "true" for "basic"). Raises ValueError naming the bad op."""
    spec = {"true": "basic", "false": "", "none": ""}.get(str(spec).strip().lower(), str(spec))
    spec = PRESETS.get(spec.strip(), spec.strip())
    ops = []
    for part in filter(None, (p.strip() for p in spec.replace(" ", "").split("+"))):
        match = _OP.match(part)
        if not match or match[1] not in OPS:
            raise ValueError(f"unknown augmentation {part!r}; ops: {', '.join(OPS)}; "
                             f"presets: {', '.join(PRESETS)}")
        name, args = match[1], match[2]
        try:
            values = tuple(float(a) for a in args.split(",")) if args else DEFAULTS.get(name, ())
        except ValueError:
            raise ValueError(f"augmentation {part!r}: arguments must be numbers") from None
        expected = len(DEFAULTS.get(name, ()))
        if len(values) != expected:
            raise ValueError(f"augmentation {name} takes {expected} argument(s), got {part!r}")
        if name == "scale" and not 0 < values[0] <= values[1]:
            raise ValueError(f"augmentation {part!r}: need 0 < a <= b")
        ops.append((name, values))
    return ops


def _albumentations():
    try:
        import albumentations
        import cv2
    except ImportError as e:
        raise ImportError("augmentation needs albumentations: pip install 'albumentations>=2.0.8,<3' "
                          f"({e})") from e
    return albumentations, cv2


def _transforms(ops, size: tuple[int, int], channels: int) -> list:
    A, cv2 = _albumentations()
    h, w = size
    fill = dict(border_mode=cv2.BORDER_CONSTANT, fill=LETTERBOX_FILL, fill_mask=IGNORE_INDEX)
    out, zoomed = [], False
    for name, args in ops:
        if name == "scale":
            out.append(A.RandomScale(scale_limit=(args[0] - 1, args[1] - 1), p=1.0))
            zoomed = True
        elif name == "jitter":
            out.append(A.Affine(scale={"x": (1 - args[0], 1 + args[0]), "y": (1.0, 1.0)},
                                keep_ratio=False, p=1.0, **fill))
        elif name == "crop":
            out += [A.PadIfNeeded(h, w, position="random", **fill), A.RandomCrop(h, w)]
            zoomed = False
        elif name == "resized_crop":
            out.append(A.RandomResizedCrop((h, w), scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)))
        elif name == "hflip":
            out.append(A.HorizontalFlip(p=0.5))
        elif name == "vflip":
            out.append(A.VerticalFlip(p=0.5))
        elif name == "hsv" and channels == 3:
            hue, sat, val = args
            out.append(A.ColorJitter(brightness=(1 - val, 1 + val), contrast=(1.0, 1.0),
                                     saturation=(1 - sat, 1 + sat), hue=(-hue, hue), p=1.0))
    if zoomed:
        out += [A.PadIfNeeded(h, w, position="center", **fill), A.CenterCrop(h, w)]
    return out


class _PerThread(threading.local):
    def __init__(self):
        self.composes = {}


def pipeline(spec: str):
    """`augment(image, mask, rng)` for `spec` (uint8 (H, W, C) image, (H, W) mask; same size
    out), or None when it names no op."""
    ops = parse(spec)
    if not ops:
        return None
    A, cv2 = _albumentations()
    cv2.setNumThreads(1)  # the parallelism is grain's threads, one sample each
    local = _PerThread()

    def augment(image, mask, rng):
        key = (mask.shape, image.shape[-1])
        if key not in local.composes:
            local.composes[key] = A.Compose(_transforms(ops, *key))
        compose = local.composes[key]
        compose.set_random_seed(int(rng.integers(2**32)))
        out = compose(image=image, mask=mask)
        image_out = out["image"].reshape(*mask.shape, image.shape[-1])
        return np.ascontiguousarray(image_out), np.ascontiguousarray(out["mask"])

    return augment
