"""Colours and names of classes, the one source for every picture of masks: the Pascal VOC
palette up to 21 classes, evenly spaced hues beyond (as bubbliiiing), the ignore index in
VOC's border colour; palette PNGs, bubbliiiing's overlays (`mix_type` 0, 1, 2), the matplotlib
colormap of the same colours, and legends with the class names a dataset layout knows."""

import colorsys

import numpy as np
from PIL import Image

from unet_jax.data.imageio import IGNORE_INDEX

MIX_TYPES = {0: "the colours blended over the image (0.7)", 1: "the colours only",
             2: "the image where the class is not background"}
IGNORE_COLOUR = (224, 224, 192)  # VOC's colour 255: its object borders, ignored in training
LEGEND_ALL = 32  # a legend lists every class up to this count, else the classes shown

# class names of the dataset layouts (unet_jax.layouts) that fix them, in class-id order
LAYOUT_NAMES = {
    "voc": ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
            "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
            "sheep", "sofa", "train", "tvmonitor"),
    # SegNet's CamVid labels, as pytorch-semseg and the UNet++ seed (smp's example) name them
    "camvid": ("sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence",
               "car", "pedestrian", "bicyclist", "unlabelled"),
    "carvana": ("background", "car"),
    "isic": ("background", "lesion"),
}


def voc_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8: the VOC colour map (class k's bits spread over R, G, B, high bit first)."""
    colours = np.zeros((n, 3), np.uint8)
    for k in range(n):
        c, value = k, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                value[channel] |= ((c >> channel) & 1) << shift
            c >>= 3
        colours[k] = value
    return colours


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours."""
    if num_classes <= 21:
        return voc_palette(num_classes)
    hues = [colorsys.hsv_to_rgb(k / num_classes, 1.0, 1.0) for k in range(num_classes)]
    return (np.array(hues) * 255).astype(np.uint8)


def full_palette(num_classes: int) -> np.ndarray:
    """(256, 3) uint8: `palette(num_classes)`, black for unused ids, the ignore colour at 255."""
    colours = np.zeros((256, 3), np.uint8)
    colours[:num_classes] = palette(num_classes)[:256]
    colours[IGNORE_INDEX] = IGNORE_COLOUR
    return colours


def colormap(num_classes: int):
    """(cmap, vmin, vmax) for `imshow(mask, cmap=cmap, vmin=vmin, vmax=vmax,
    interpolation="nearest")`: class k in palette colour k, ids above the last class (the
    ignore index) in the ignore colour."""
    from matplotlib.colors import ListedColormap
    cmap = ListedColormap(palette(num_classes) / 255.0, name=f"unet_jax_{num_classes}")
    return cmap.with_extremes(over=np.array(IGNORE_COLOUR) / 255.0), -0.5, num_classes - 0.5


def class_names(num_classes: int, names: str | list | tuple = "", layout: str | None = None
                ) -> list[str]:
    """Names of the classes: `names` (a list, comma-separated, or a layout of
    `LAYOUT_NAMES`), else the names of dataset `layout` where it has `num_classes` classes,
    else "class k". Raises ValueError when `names` has another count."""
    if isinstance(names, str):
        names = LAYOUT_NAMES.get(names.strip().lower()) or [n.strip() for n in names.split(",")
                                                           if names.strip()]
    if names:
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for {num_classes} classes: "
                             f"{', '.join(names)}")
        return list(names)
    known = LAYOUT_NAMES.get(layout or "", ())
    return list(known) if len(known) == num_classes else [f"class {k}" for k in range(num_classes)]


def legend_entries(names: list[str], present=None, ignore: bool = False
                   ) -> list[tuple[str, tuple[float, float, float]]]:
    """(label, RGB in 0..1) per class: every class up to `LEGEND_ALL` classes, else those in
    `present` (ids); the label "k: name" (just the name for the default "class k"); then the
    ignore index if `ignore`."""
    colours = palette(len(names)) / 255.0
    shown = range(len(names))
    if present is not None and len(names) > LEGEND_ALL:
        shown = sorted({int(k) for k in present} & set(shown))
    entries = [(name if name == f"class {k}" else f"{k}: {name}", tuple(colours[k]))
               for k, name in ((k, names[k]) for k in shown)]
    if ignore:
        entries.append((f"{IGNORE_INDEX}: ignored", tuple(np.array(IGNORE_COLOUR) / 255.0)))
    return entries


def legend_handles(entries):
    """matplotlib patches of `legend_entries` (outlined: black and white classes show)."""
    from matplotlib.patches import Patch
    return [Patch(facecolor=rgb, edgecolor="0.4", linewidth=0.6, label=label)
            for label, rgb in entries]


def legend_image(entries, path, title: str = "class colours") -> None:
    """A PNG of the legend alone: a colour swatch and a label per entry."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    columns = max(1, -(-len(entries) // 16))
    rows = -(-len(entries) // columns)
    width = max(len(label) for label, _ in entries)
    fig = plt.figure(figsize=(columns * (0.9 + 0.085 * width), 0.6 + 0.28 * rows))
    fig.legend(handles=legend_handles(entries), loc="center", ncols=columns, frameon=False,
               title=title, fontsize=10, handlelength=2.2, handleheight=1.2)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)


def mask_image(mask: np.ndarray, num_classes: int) -> Image.Image:
    """A palette ("P") PNG image of class ids: the pixel values are the ids."""
    image = Image.fromarray(mask.astype(np.uint8), "P")
    image.putpalette(full_palette(num_classes).ravel().tolist())
    return image


def overlay(image: np.ndarray, mask: np.ndarray, num_classes: int, mix_type: int = 0) -> Image.Image:
    """bubbliiiing `detect_image`'s picture of `mask` on the uint8 RGB `image`."""
    if mix_type not in MIX_TYPES:
        raise ValueError(f"mix_type must be one of {sorted(MIX_TYPES)}, got {mix_type}")
    rgb = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, -1)
    colours = palette(num_classes)[mask]
    if mix_type == 0:
        return Image.blend(Image.fromarray(rgb), Image.fromarray(colours), 0.7)
    if mix_type == 1:
        return Image.fromarray(colours)
    return Image.fromarray((rgb * (mask != 0)[..., None]).astype(np.uint8))


def values_image(mask: np.ndarray, values: list) -> Image.Image:
    """Class ids -> the mask pixel values the model was trained on (milesial's
    `mask_to_image`): [0, 1] a 1-bit image, grey levels an L image, colours (lists) RGB."""
    if values and isinstance(values[0], list | tuple):
        out = np.zeros((*mask.shape, len(values[0])), np.uint8)
    else:
        out = np.zeros(mask.shape, bool if list(values) == [0, 1] else np.uint8)
    for i, value in enumerate(values):
        out[mask == i] = value
    return Image.fromarray(out)
