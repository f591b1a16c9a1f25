"""`unet-jax predict` and `evaluate`: a model on users' images, masks and metrics out."""

import glob
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from unet_jax import presets, registry
from unet_jax.checkpoints.saved import ModelSourceError
from unet_jax.checkpoints.sources import open_model, source_kind
from unet_jax.cli import predict_volumes
from unet_jax.cli.parsing import parse_size
from unet_jax.data import datasets, imageio, layouts
from unet_jax.inference import evaluation, palette
from unet_jax.inference import prediction as predict_lib
from unet_jax.models import recorded


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
    model, report, _ = open_model(args.model, args.arch, which=args.which)
    for note in report["notes"]:
        print(f"read:    {note}")
    return model


def cmd_predict(args) -> int:
    if predict_volumes.wants_volumes(args):
        return predict_volumes.cmd_predict_volumes(args, _check_output)
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
    values = recorded.mask_values(model)
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
    _check_model(args)
    _check_output(args)
    model = _open(args)
    found = layouts.from_spec(args.data)
    if args.split not in found.splits:
        raise ValueError(f"{found.root} has splits {', '.join(found.splits)}, not {args.split!r}")
    num_classes = max(2, registry.uniform_option(model, "num_classes"))
    dataset = datasets.FileDataset(tuple(found.splits[args.split]), num_classes, binary=found.binary,
                               channels=registry.uniform_option(model, "in_channels"),
                               out_of_range=args.out_of_range,
                               fixes="map them to the ignore index with --out-of-range ignore, or "
                                     "evaluate a model of {classes} or more classes")
    result = evaluation.evaluate(model, dataset, _options(args), progress=args.progress)
    names = palette.class_names(num_classes, args.names, found.name)
    paths = evaluation.write_report(result, Path(args.output), names)
    print(f"{found.name} {args.split}: {result['images']} images, {result['pixels']:,} pixels; "
          f"preprocess {result['preprocess']}, fit {result['fit']}")
    print(f"{'class':<14}{'IoU':>8}{'recall':>8}{'precision':>10}")
    for k in range(num_classes):
        print(f"{names[k]:<14}{100 * result['iou'][k]:>8.2f}"
              f"{100 * result['recall'][k]:>8.2f}{100 * result['precision'][k]:>10.2f}")
    print(f"mIoU {100 * result['miou_all_classes']:.2f} over all {len(result['iou'])} classes (an "
          f"absent class counts 0, as bubbliiiing; {100 * result['miou_present']:.2f} over the "
          f"classes present, as training reports it); mPA (mean recall) {100 * result['mrecall']:.2f}; "
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
    p.add_argument("--size", type=parse_size, help="letterbox / resize target HxW (default: the model's "
                                              "training size, else the preset's, else the arch's)")
    p.add_argument("--tile", type=int, default=1024,
                   help=f"sides up to TILE are padded to a multiple of {predict_lib.BUCKET} (then a "
                        "size the arch takes): at most (TILE/128)^2 compiled shapes; longer sides "
                        "are cut into overlapping TILE windows")
    p.add_argument("--overlap", type=float, default=0.25, help="window overlap fraction")
    p.add_argument("--blend", choices=predict_lib.BLENDS, default="gaussian",
                   help="weights where windows overlap")
    p.add_argument("--tta", action="store_true", help="average with the flipped image's prediction")
    p.add_argument("--batch", type=int, default=0, help="windows per call (default: 2 per local device; "
                   "volumes: 1 per local device)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def add_parsers(sub) -> None:
    p = sub.add_parser("predict", help="images of any size -> class-id PNGs, overlays, probabilities")
    _prediction_flags(p)
    p.add_argument("inputs", nargs="+", help="image files, folders or globs (PNG/JPEG/BMP/TIFF); "
                   "for an nnU-Net model, NIfTI files or folders (CASE_0000.nii.gz per channel)")
    p.add_argument("-o", "--output", required=True,
                   help="folder for <name>.png (class ids, palette), legend.png (the class "
                        "colours) and, for a milesial "
                        "checkpoint, <name>_mask.png (its mask_values)")
    p.add_argument("--overlay", type=int, default=0, choices=(-1, 0, 1, 2),
                   help="<name>_overlay.png as bubbliiiing mix_type: 0 blended, 1 colours, "
                        "2 image where not background; -1 none")
    p.add_argument("--probabilities", action="store_true", help="also <name>.npy (H, W, classes); "
                   "for volumes <case>.npz (classes, z, y, x)")
    p.add_argument("--names", default="", help="class names for legend.png (the colours): "
                   f"comma-separated, or a dataset's ({', '.join(palette.LAYOUT_NAMES)}); "
                   "default: class k")
    p.add_argument("--half", action="store_true", help="probabilities as float16")
    p.add_argument("--chunk", type=int, default=8, help="images read and predicted together")
    v = p.add_argument_group("volumes (an nnU-Net model folder, or its folds converted)")
    v.add_argument("--folds", nargs="*", help="the folds to average (default: all)")
    v.add_argument("--no-mirroring", dest="mirroring", action="store_false",
                   help="skip the mirroring over the model's allowed axes")
    v.add_argument("--step", type=float, default=0.5, help="sliding-window step, a fraction of the "
                   "patch (nnU-Net's tile_step_size)")
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
