"""`unet-jax data`: what a dataset folder holds (layout, splits, classes, sizes, bad files)."""

import numpy as np

from unet_jax.data import datasets, layouts, nifti, volume_layouts
from unet_jax.data.imageio import IGNORE_INDEX

SCAN = 200  # samples per split `unet-jax data` reads by default


def cmd_data(args) -> int:
    volumes = None if args.layout else volume_layouts.detect(args.path)
    if volumes is not None:
        return _report_volumes(volumes, args)
    found = layouts.detect(args.path, args.layout)
    print(f"layout:  {found.name} ({layouts.EXPECTED[found.name]})\nroot:    {found.root}\n"
          f"splits:  {', '.join(f'{k} {len(v)}' for k, v in found.splits.items())} "
          f"({found.split_rule})" + ("\nmasks:   binary (255 -> class 1)" if found.binary else ""))
    problems = []
    for split, pairs in found.splits.items():
        dataset = datasets.FileDataset(tuple(pairs), args.classes or 256, binary=found.binary,
                                   fixes="count them as classes with --classes {classes}, or map "
                                         "them to the ignore index in train and evaluate with "
                                         "--out-of-range ignore")
        count = len(pairs) if args.scan == 0 else min(len(pairs), args.scan)
        values, sizes = set(), {}
        for i in range(count):
            try:
                image, mask = dataset.read(i)
            except ValueError as e:
                problems.append(f"{split}: {e}")
                continue
            values |= set(np.unique(mask).tolist())
            key = f"{image.shape[1]}x{image.shape[0]}"
            sizes[key] = sizes.get(key, 0) + 1
        common = sorted(sizes.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{k} ({n})" for k, n in common[:4]) + (" ..." if len(common) > 4 else "")
        ignored = sorted(v for v in values if v == IGNORE_INDEX)
        classes = sorted(v for v in values if v != IGNORE_INDEX)
        print(f"{split}: read {count} of {len(pairs)}; classes seen {_ranges(classes)}"
              + (" + 255 (ignored)" if ignored else "") + f"; sizes (WxH) {shown or '-'}")
    for problem in problems[:20]:
        print(f"error:   {problem}")
    if len(problems) > 20:
        print(f"error:   ... and {len(problems) - 20} more")
    return 2 if problems else 0


def _report_volumes(found: volume_layouts.VolumeLayout, args) -> int:
    """Cases, channels, sizes, spacings and label values of a volume dataset (headers of every
    case; the labels' voxels of up to --scan cases)."""
    print(f"layout:  {found.name} (dataset.json + " + ("imagesTr/CASE_XXXX, labelsTr/CASE)" if found.name
          == "nnunet" else "training / test lists)") + f"\nroot:    {found.root}\nchannels: "
          + ", ".join(f"{k} {v}" for k, v in found.channels.items())
          + f"\nlabels:  {', '.join(f'{k} {v}' for k, v in found.labels.items())}")
    problems = list(found.problems)
    for split, cases in found.splits.items():
        sizes, spacings, values = [], [], set()
        for i, case in enumerate(cases):
            try:
                size, spacing, seen = volume_layouts.survey(case, args.scan == 0 or i < args.scan)
            except nifti.VolumeFileError as e:
                problems.append(f"{split}: {e}")
                continue
            sizes.append(size)
            spacings.append(spacing)
            values |= seen
        if not sizes:
            print(f"{split}: {len(cases)} cases, none readable")
            continue
        print(f"{split}: {len(cases)} cases; size (z, y, x) {_spread(sizes, '{:g}')}; spacing "
              f"{_spread(spacings, '{:.3g}')}"
              + (f"; label values {_ranges(sorted(values))}" if values else ""))
        declared = {v for v in found.labels.values() if isinstance(v, int)}
        if values - declared and declared:
            problems.append(f"{split}: label values {sorted(values - declared)} are not in "
                            "dataset.json's labels")
    for problem in problems[:20]:
        print(f"error:   {problem}")
    if len(problems) > 20:
        print(f"error:   ... and {len(problems) - 20} more")
    return 2 if problems else 0


def _spread(rows: list, fmt: str) -> str:
    """min / median / max per axis."""
    a = np.asarray(rows, float)
    return " x ".join("/".join(fmt.format(v) for v in (c.min(), np.median(c), c.max())) for c in a.T) + \
        " (min/median/max)"


def _ranges(values: list[int]) -> str:
    if not values:
        return "none"
    if values == list(range(values[0], values[-1] + 1)) and len(values) > 3:
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values))


def add_parser(sub) -> None:
    d = sub.add_parser("data", help="what dataset layout a folder holds: splits, classes, sizes")
    d.add_argument("path")
    d.add_argument("--layout", default="", choices=["", *layouts.READERS],
                   help="read as this layout (default: detected)")
    d.add_argument("--classes", type=int, default=0, help="check mask values against this count")
    d.add_argument("--scan", type=int, default=SCAN, help="samples read per split (0: all)")
    d.set_defaults(fn=cmd_data)
