"""Prediction: images of any size -> class probabilities and masks.

An image is first fitted as the model's preset says: "letterbox" (scaled into the preset's
size keeping its aspect, on grey; bubbliiiing `detect_image`), "resize" (to that size), or
"pad" (kept as it is). That canvas is cut into windows the arch takes: a side up to `tile`
is padded (reflecting) to a multiple of `BUCKET`, then to the next size the arch takes; a
longer side is covered by `tile`-sized windows overlapping by `overlap`, blended with
linear or Gaussian weights. Archs whose output is smaller than their input (semseg_unet)
get the missing context by reflection, as the original U-Net's overlap-tile. The canvas's
probabilities are mapped back to the image (cropped from the letterbox, bilinear resize).
So the compiled shapes are bounded (at most (tile / BUCKET)^2 + a few), and windows of the
same shape run in batches over all local devices.
"""

import dataclasses
import functools
import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from unet_jax import compile_notice, presets, registry
from unet_jax.data import imageio
from unet_jax.inference.compiled import inference_jit
from unet_jax.models import outputs, recorded

BUCKET = 128  # canvas sides up to `tile` are padded to a multiple of this
FITS = ("letterbox", "resize", "pad")
BLENDS = ("linear", "gaussian")


@dataclasses.dataclass(frozen=True)
class Options:
    preprocess: str = ""  # preset name ("": the model's recorded one)
    fit: str = ""  # letterbox | resize | pad ("": the preset's)
    size: tuple[int, int] | None = None  # letterbox / resize size (None: the model's, the preset's)
    tile: int = 1024  # canvas sides longer than this are cut into overlapping windows
    overlap: float = 0.25  # window overlap, a fraction of the window
    blend: str = "gaussian"  # linear | gaussian: weights where windows overlap
    tta: bool = False  # also predict the horizontally flipped image, average
    batch: int = 0  # windows per compiled call (0: 2 per local device)

    def __post_init__(self):
        if self.fit and self.fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}, got {self.fit!r}")
        if self.blend not in BLENDS:
            raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {self.blend!r}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.tile < BUCKET:
            raise ValueError(f"tile must be >= {BUCKET}, got {self.tile}")
        if self.preprocess:
            presets.get(self.preprocess)


@functools.cache
def _probabilities(preset_name: str, tta: bool):
    preset = presets.get(preset_name)

    def probs(model, x):
        return outputs.probabilities(outputs.last_head(model(x)))

    @inference_jit
    def probabilities(model, images):
        x = preset.normalize(images)
        p = probs(model, x)
        return (p + probs(model, x[:, :, ::-1])[:, :, ::-1]) / 2 if tta else p

    return compile_notice.Announced(probabilities, "the prediction", "windows")


def _weights(length: int, window: int, blend: str) -> np.ndarray:
    if length <= window:
        return np.ones(window, np.float32)
    t = (np.arange(window, dtype=np.float32) + 0.5) / window
    if blend == "linear":
        return np.maximum(1 - np.abs(2 * t - 1), 1e-3)
    return np.exp(-0.5 * ((t - 0.5) / 0.125) ** 2) + 1e-3


class Predictor:
    """`model` (eval mode) replicated over this process's devices, predicting with `options`."""

    def __init__(self, model: nnx.Module, options: Options = Options()):
        self.options = options
        self.arch = registry.arch_of_config(model.config)
        self.rule = self.arch.sizes
        self.preset = presets.get(options.preprocess or recorded.preset_of(model))
        trained_at = recorded.input_size_of(model)
        # a trained model is fitted as its training images were (letterbox or resize)
        self.fit = options.fit or (self.preset.training_fit if trained_at else self.preset.fit)
        default = self.arch.train_defaults.get("image_size", registry.TRAIN_DEFAULTS["image_size"])
        self.size = tuple(options.size or trained_at or self.preset.size or (default, default))
        if self.fit in ("letterbox", "resize") and not all(map(self.rule.valid, self.size)):
            raise ValueError(f"{self.fit} size {self.size[0]}x{self.size[1]}: {self.arch.name} "
                             f"takes sizes {self.rule.describe()}")
        self.channels = registry.uniform_option(model, "in_channels")
        self.classes = max(2, registry.uniform_option(model, "num_classes"))
        self.devices = jax.local_devices()
        mesh = jax.sharding.Mesh(np.array(self.devices), ("data",))
        self.sharding = NamedSharding(mesh, P("data"))
        graphdef, state = nnx.split(model)
        self.model = nnx.merge(graphdef, jax.device_put(state, NamedSharding(mesh, P())))
        per_call = options.batch or 2 * len(self.devices)
        self.batch = len(self.devices) * math.ceil(per_call / len(self.devices))
        self.fn = _probabilities(self.preset.name, options.tta)

    # -- windows
    def _window(self, length: int) -> int:
        """Output length of the windows along a canvas side of `length`."""
        if length <= self.options.tile:
            return self.rule.input_for(BUCKET * math.ceil(length / BUCKET)) - self.rule.shrink
        largest = self.rule.at_least(self.options.tile + self.rule.shrink)
        if largest - self.rule.shrink > self.options.tile:
            largest -= self.rule.step
        return max(largest - self.rule.shrink, self.rule.minimum)

    def _starts(self, length: int, window: int) -> list[int]:
        if length <= window:
            return [0]
        stride = max(1, round(window * (1 - self.options.overlap)))
        return sorted({*range(0, length - window, stride), length - window})

    def canvas(self, image: np.ndarray) -> tuple[np.ndarray, tuple]:
        """The fitted canvas of `image` and how to map its probabilities back."""
        if self.fit == "letterbox":
            return imageio.letterbox(image, self.size), imageio.letterbox_box(image.shape[:2], self.size)
        if self.fit == "resize":
            return imageio.resize(image, self.size, Image.BILINEAR), None
        return image, None

    def probabilities(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """(H, W, classes) float32 probabilities of each uint8 (H, W, C) image."""
        canvases = [self.canvas(self._channels(im)) for im in images]
        outputs = self.canvas_probabilities([c for c, _ in canvases])
        return [self._back(p, box, im.shape[:2]) for p, (_, box), im in zip(outputs, canvases, images)]

    def _channels(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[-1] == self.channels:
            return image
        if image.shape[-1] == 1 and self.channels == 3:
            return np.repeat(image, 3, -1)
        if image.shape[-1] in (3, 4) and self.channels == 1:
            return np.asarray(Image.fromarray(image[..., :3]).convert("L"))[..., None]
        if image.shape[-1] == 4 and self.channels == 3:
            return image[..., :3]
        raise ValueError(f"an image of {image.shape[-1]} channels for a model of {self.channels}")

    def _back(self, probs: np.ndarray, box, shape) -> np.ndarray:
        if box is not None:
            top, left, nh, nw = box
            probs = probs[top:top + nh, left:left + nw]
        return bilinear(probs, shape)

    def canvas_probabilities(self, canvases: list[np.ndarray]) -> list[np.ndarray]:
        """Probabilities of fitted canvases (`canvas`), window by window, blended."""
        s = self.rule.shrink // 2
        jobs, accumulators = {}, []
        for index, canvas in enumerate(canvases):
            (h, w), opts = canvas.shape[:2], self.options
            wy, wx = self._window(h), self._window(w)
            pad = ((s, s + max(0, wy - h)), (s, s + max(0, wx - w)), (0, 0))
            padded = np.pad(canvas, pad, mode="reflect" if min(h, w) > 1 else "edge")
            weight = np.outer(_weights(h, wy, opts.blend), _weights(w, wx, opts.blend))
            area = (max(h, wy), max(w, wx))
            accumulators.append((np.zeros((*area, self.classes), np.float32),
                                 np.zeros(area, np.float32), (h, w)))
            for y in self._starts(h, wy):
                for x in self._starts(w, wx):
                    crop = padded[y:y + wy + 2 * s, x:x + wx + 2 * s]
                    jobs.setdefault(crop.shape, []).append((crop, index, y, x, weight))
        for group in jobs.values():
            for first in range(0, len(group), self.batch):
                chunk = group[first:first + self.batch]
                stack = np.stack([c[0] for c in chunk] + [chunk[-1][0]] * (self.batch - len(chunk)))
                probs = np.asarray(self.fn(self.model, jax.device_put(stack, self.sharding)))
                for p, (_, index, y, x, weight) in zip(probs, chunk):
                    acc, total, _ = accumulators[index]
                    acc[y:y + p.shape[0], x:x + p.shape[1]] += weight[..., None] * p
                    total[y:y + p.shape[0], x:x + p.shape[1]] += weight
        return [(acc / total[..., None])[:h, :w] for acc, total, (h, w) in accumulators]


def bilinear(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, C) resized to `shape` by half-pixel bilinear interpolation, no antialiasing
    (cv2.INTER_LINEAR, torch `interpolate(mode="bilinear", align_corners=False)`)."""
    for axis, n in enumerate(shape):
        size = array.shape[axis]
        if size == n:
            continue
        src = np.clip((np.arange(n) + 0.5) * (size / n) - 0.5, 0, size - 1)
        low = np.floor(src).astype(np.int64)
        high = np.minimum(low + 1, size - 1)
        frac = (src - low).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
        array = np.take(array, low, axis) * (1 - frac) + np.take(array, high, axis) * frac
    return array


def to_uint8(image) -> np.ndarray:
    """An image as uint8 (H, W, C): a PIL image, a uint8 array, or a float array in [0, 1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.floating):
            raise TypeError(f"images must be uint8 or float in [0, 1], got {image.dtype}")
        image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return image if image.ndim == 3 else image[..., None]


def masks(probabilities: np.ndarray) -> np.ndarray:
    return probabilities.argmax(-1).astype(np.uint8)


def predict(model: nnx.Module, image, *, preprocess: str = "", **options) -> np.ndarray:
    """The (H, W) uint8 class-id mask of one image (a path, PIL image, uint8 array or float
    array in [0, 1], any size), with the model's recorded preset unless `preprocess` names
    another; `options`: the fields of `Options`."""
    if not isinstance(image, (np.ndarray, Image.Image)):
        image = imageio.read_image(image, registry.uniform_option(model, "in_channels"))
    predictor = Predictor(model, Options(preprocess=preprocess, **options))
    return masks(predictor.probabilities([to_uint8(image)])[0])
