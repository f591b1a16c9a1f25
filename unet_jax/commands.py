"""`unet-jax data`, `predict` and `evaluate`: the commands that read users' image files."""

import glob
import sys
from pathlib import Path

import numpy as np

from unet_jax import imageio, layouts, palette, presets
from unet_jax import prediction as predict_lib

SCAN = 200  # samples per split `unet-jax data` reads by default


def _size(text: str) -> tuple[int, int]:
    from unet_jax.cli import parse_size
    return parse_size(text)


def cmd_data(args) -> int:
    from unet_jax import data
    found = layouts.detect(args.path, args.layout)
    print(f"layout:  {found.name} ({layouts.EXPECTED[found.name]})\nroot:    {found.root}\n"
          f"splits:  {', '.join(f'{k} {len(v)}' for k, v in found.splits.items())} "
          f"({found.split_rule})" + ("\nmasks:   binary (255 -> class 1)" if found.binary else ""))
    problems = []
    for split, pairs in found.splits.items():
        dataset = data.FileDataset(tuple(pairs), args.classes or 256, binary=found.binary,
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
        ignored = sorted(v for v in values if v == data.IGNORE_INDEX)
        classes = sorted(v for v in values if v != data.IGNORE_INDEX)
        print(f"{split}: read {count} of {len(pairs)}; classes seen {_ranges(classes)}"
              + (" + 255 (ignored)" if ignored else "") + f"; sizes (WxH) {shown or '-'}")
    for problem in problems[:20]:
        print(f"error:   {problem}")
    if len(problems) > 20:
        print(f"error:   ... and {len(problems) - 20} more")
    return 2 if problems else 0


def _ranges(values: list[int]) -> str:
    if not values:
        return "none"
    if values == list(range(values[0], values[-1] + 1)) and len(values) > 3:
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values))


def input_files(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Image files named by `inputs` (files, folders, globs), and the inputs matching none."""
    files, unmatched = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in layouts.IMAGE_SUFFIXES)
        elif path.exists():
            found = [path]
        else:
            found = [Path(p) for p in sorted(glob.glob(item))]
        files += found
        if not found:
            unmatched.append(item)
    return files, unmatched


def _options(args) -> predict_lib.Options:
    return predict_lib.Options(preprocess=args.preprocess, fit=args.fit, size=args.size,
                               tile=args.tile, overlap=args.overlap, blend=args.blend,
                               tta=args.tta, batch=args.batch)


def _check_model(args) -> None:
    """Refuse a model argument that is no model source before any image is read; an image
    there (arguments swapped) is told so."""
    from unet_jax.saving import ModelSourceError, source_kind
    try:
        source_kind(args.model)
    except ModelSourceError as e:
        if Path(args.model).suffix.lower() not in layouts.IMAGE_SUFFIXES:
            raise
        raise ModelSourceError(f"{e}; the first argument of {args.command} is the model (a saved "
                               "model, training workdir, smp save_pretrained folder or torch "
                               "checkpoint)") from None


def _check_output(args) -> None:
    """Refuse an output that is a file or a folder that is not empty, as convert and export
    do: nothing a user has is overwritten."""
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; {args.command} writes a folder: choose a new "
                              "folder name")
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; nothing written: choose a new "
                              "folder, or empty it")


def _open(args):
    from unet_jax.sources import open_model
    model, report, _ = open_model(args.model, args.arch, which=args.which)
    for note in report["notes"]:
        print(f"read:    {note}")
    return model


def cmd_predict(args) -> int:
    from tqdm import tqdm

    from unet_jax import registry
    _check_model(args)
    _check_output(args)
    files, unmatched = input_files(args.inputs)
    for item in unmatched:
        why = ("a folder without images (" + ", ".join(layouts.IMAGE_SUFFIXES) + ")"
               if Path(item).is_dir() else "no such file, folder or matching image")
        print(f"error:   {item}: {why}", file=sys.stderr)
    if not files:
        raise ValueError("no input images")
    model = _open(args)
    predictor = predict_lib.Predictor(model, _options(args))
    num_classes = predictor.classes
    values = presets.mask_values(model)
    class_names = palette.class_names(num_classes, args.names)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    print(f"model:   {registry.arch_of_config(model.config).name}, {num_classes} classes; "
          f"preprocess {predictor.preset.name}, fit {predictor.fit}"
          + (f" {predictor.size[0]}x{predictor.size[1]}" if predictor.fit != "pad" else "")
          + f"; {len(predictor.devices)} device(s)")
    failed, names, seen = list(unmatched), set(), set()
    for first in tqdm(range(0, len(files), args.chunk), unit="batch", disable=not args.progress):
        batch = []
        for path in files[first:first + args.chunk]:
            try:
                batch.append((path, imageio.read_image(path, predictor.channels)))
            except ValueError as e:
                print(f"error:   {e}; skipped", file=sys.stderr)
                failed.append(str(path))
        for (path, image), probs in zip(batch, predictor.probabilities([im for _, im in batch])):
            name = path.stem
            for n in range(2, 10**6):  # same-named inputs from different folders
                if name not in names and name != "legend":  # legend.png: the class colours
                    break
                name = f"{path.stem}-{n}"
            names.add(name)
            mask = predict_lib.masks(probs)
            seen.update(np.unique(mask).tolist())
            palette.mask_image(mask, num_classes).save(out / f"{name}.png")
            if values:  # milesial: the mask pixel values it was trained on, as its predict.py
                palette.values_image(mask, values).save(out / f"{name}_mask.png")
            if args.overlay >= 0:
                palette.overlay(image, mask, num_classes, args.overlay).save(out / f"{name}_overlay.png")
            if args.probabilities:
                np.save(out / f"{name}.npy", probs.astype(np.float16 if args.half else np.float32))
    if names:
        palette.legend_image(palette.legend_entries(class_names, seen), out / "legend.png")
    print(f"done:    {len(names)} image(s) -> {out}" + (f"; {len(failed)} failed" if failed else "")
          + ("; legend.png: the class colours" if names else ""))
    return 2 if failed else 0


def cmd_evaluate(args) -> int:
    from unet_jax import data, evaluate, registry
    _check_model(args)
    _check_output(args)
    model = _open(args)
    found = layouts.from_spec(args.data)
    if args.split not in found.splits:
        raise ValueError(f"{found.root} has splits {', '.join(found.splits)}, not {args.split!r}")
    num_classes = max(2, registry.uniform_option(model, "num_classes"))
    dataset = data.FileDataset(tuple(found.splits[args.split]), num_classes, binary=found.binary,
                               channels=registry.uniform_option(model, "in_channels"),
                               out_of_range=args.out_of_range,
                               fixes="map them to the ignore index with --out-of-range ignore, or "
                                     "evaluate a model of {classes} or more classes")
    result = evaluate.evaluate(model, dataset, _options(args), progress=args.progress)
    names = palette.class_names(num_classes, args.names, found.name)
    paths = evaluate.write_report(result, Path(args.output), names)
    print(f"{found.name} {args.split}: {result['images']} images, {result['pixels']:,} pixels; "
          f"preprocess {result['preprocess']}, fit {result['fit']}")
    print(f"{'class':<14}{'IoU':>8}{'recall':>8}{'precision':>10}")
    for k in range(num_classes):
        print(f"{names[k]:<14}{100 * result['iou'][k]:>8.2f}"
              f"{100 * result['recall'][k]:>8.2f}{100 * result['precision'][k]:>10.2f}")
    print(f"mIoU {100 * result['miou']:.2f}; mPA (mean recall) {100 * result['mrecall']:.2f}; "
          f"pixel accuracy {100 * result['pixel_acc']:.2f}\nwrote:   "
          + ", ".join(map(str, paths)))
    return 0


def _prediction_flags(p) -> None:
    p.add_argument("model", help="saved model, training workdir, smp save_pretrained folder or "
                                 "torch checkpoint (converted in memory)")
    p.add_argument("--arch", help="of a torch checkpoint: skip arch inference")
    p.add_argument("--which", choices=("best", "latest"), default="best",
                   help="of a training workdir: the best (val mIoU) or latest checkpoint")
    p.add_argument("--preprocess", default="", choices=["", *presets.PRESETS],
                   help="input preset (default: the model's recorded one): " + presets.describe())
    p.add_argument("--fit", default="", choices=["", *predict_lib.FITS],
                   help="letterbox / resize to --size, or pad to a size the arch takes and crop "
                        "back (default: the preset's)")
    p.add_argument("--size", type=_size, help="letterbox / resize target HxW (default: the model's "
                                              "training size, else the preset's, else the arch's)")
    p.add_argument("--tile", type=int, default=1024,
                   help=f"sides up to TILE are padded to a multiple of {predict_lib.BUCKET} (then a "
                        "size the arch takes): at most (TILE/128)^2 compiled shapes; longer sides "
                        "are cut into overlapping TILE windows")
    p.add_argument("--overlap", type=float, default=0.25, help="window overlap fraction")
    p.add_argument("--blend", choices=predict_lib.BLENDS, default="gaussian",
                   help="weights where windows overlap")
    p.add_argument("--tta", action="store_true", help="average with the flipped image's prediction")
    p.add_argument("--batch", type=int, default=0, help="windows per call (default: 2 per local device)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def add_parsers(sub) -> None:
    d = sub.add_parser("data", help="what dataset layout a folder holds: splits, classes, sizes")
    d.add_argument("path")
    d.add_argument("--layout", default="", choices=["", *layouts.READERS],
                   help="read as this layout (default: detected)")
    d.add_argument("--classes", type=int, default=0, help="check mask values against this count")
    d.add_argument("--scan", type=int, default=SCAN, help="samples read per split (0: all)")
    d.set_defaults(fn=cmd_data)

    p = sub.add_parser("predict", help="images of any size -> class-id PNGs, overlays, probabilities")
    _prediction_flags(p)
    p.add_argument("inputs", nargs="+", help="image files, folders or globs (PNG/JPEG/BMP/TIFF)")
    p.add_argument("-o", "--output", required=True,
                   help="folder for <name>.png (class ids, palette), legend.png (the class "
                        "colours) and, for a milesial "
                        "checkpoint, <name>_mask.png (its mask_values)")
    p.add_argument("--overlay", type=int, default=0, choices=(-1, 0, 1, 2),
                   help="<name>_overlay.png as bubbliiiing mix_type: 0 blended, 1 colours, "
                        "2 image where not background; -1 none")
    p.add_argument("--probabilities", action="store_true", help="also <name>.npy (H, W, classes)")
    p.add_argument("--names", default="", help="class names for legend.png (the colours): "
                   f"comma-separated, or a dataset's ({', '.join(palette.LAYOUT_NAMES)}); "
                   "default: class k")
    p.add_argument("--half", action="store_true", help="probabilities as float16")
    p.add_argument("--chunk", type=int, default=8, help="images read and predicted together")
    p.set_defaults(fn=cmd_predict)

    e = sub.add_parser("evaluate", help="IoU, recall, precision, mIoU, accuracy on a split")
    _prediction_flags(e)
    e.add_argument("--data", required=True, help="folder:PATH (detected) or LAYOUT:PATH")
    e.add_argument("--split", default="val")
    e.add_argument("--out-of-range", choices=("error", "ignore"), default="error",
                   help="mask values >= the class count: an error, or ignored")
    e.add_argument("--names", default="", help="class names for the report: comma-separated, "
                   f"or a dataset's ({', '.join(palette.LAYOUT_NAMES)}); default: the --data "
                   "layout's where its class count matches, else class k")
    e.add_argument("-o", "--output", required=True, help="folder for metrics.json and the plots")
    e.set_defaults(fn=cmd_evaluate)
