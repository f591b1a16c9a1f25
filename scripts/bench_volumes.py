"""The 3-D speed figures on this machine, side by side with nnU-Net (nnunetv2), as markdown tables.

1. Predict one volume: a 1-channel 160^3 case (1 mm isotropic: no resampling) with an nnU-Net
   3d_fullres configuration of patch 128^3 and the PlainConvUNet nnU-Net's planner gives that
   patch (6 stages, 32..320 features), one fold of seeded weights in nnU-Net's checkpoint format.
   `unet-jax` (`NnunetPredictor.predict_files`, first call incl. compile, then a later call)
   against nnunetv2's `nnUNetPredictor` (CPU, its defaults, torch threads = cores), mirroring off
   (`--mirroring` adds the mirrored rows: 8x the work), and the voxel agreement of the labels.
2. The input pipeline against the train step: `VolumePatches` of a cached 1x200^3 case with
   nnU-Net's default augmentation, drawn through `pipeline.epoch_samples` + `pipeline.prefetched`
   (0 and 2 grain threads, batch 2), for patch 128^3 and for the train-step patch (48x96x96 by
   default: a 5-stage 32..320 PlainConvUNet); the train step (`training_network` with deep
   supervision, `with_nnunet_defaults`, `make_steps`) of the nnU-Net network planned for that
   patch: compile, median step, the samples/s it consumes against those the pipeline delivers.

    python scripts/bench_volumes.py [--quick] [--repeats 3] [--mirroring] [--train-patch 48 96 96]

`--quick` runs every code path at tiny sizes (a smoke run). Data, plans and the model folder are
written to a temporary folder (`--root` keeps them).
"""

import argparse
import contextlib
import dataclasses
import datetime
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from unet_jax.parity import nnunet_app

CONFIG = "3d_fullres"  # the predicted configuration
TRAIN_CONFIG = "3d_bench_train"  # the same planner's network for the train-step patch
DATASET = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "object": 1}, "numTraining": 1,
           "file_ending": ".nii.gz", "name": nnunet_app.NAME}


@dataclasses.dataclass(frozen=True)
class Sizes:
    volume: tuple[int, ...]  # the predicted case
    patch: tuple[int, ...]  # its configuration's patch
    cached: tuple[int, ...]  # the case patches are drawn from
    train_patch: tuple[int, ...]  # the train step's patch
    batch: int = 2
    pipeline_batches: int = 5  # batches timed per pipeline row (after one warm-up batch)


FULL = Sizes((160, 160, 160), (128, 128, 128), (200, 200, 200), (48, 96, 96))
QUICK = Sizes((40, 40, 40), (32, 32, 32), (48, 48, 48), (16, 32, 32), pipeline_batches=2)


def machine_line() -> str:
    import importlib.metadata

    import jax
    import torch

    from unet_jax.kernels.cpu.tuning import cpu_key
    model, isa, cores, _ = cpu_key().split(" | ")
    return (f"Machine: {model} ({isa}), {cores}; jax {jax.__version__} ({jax.default_backend()}), "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"nnunetv2 {importlib.metadata.version('nnunetv2')}; {datetime.date.today().isoformat()}")


def _shape(values) -> str:
    return "x".join(str(int(v)) for v in values)


# --- data, plans, model folder ------------------------------------------------------------------

def smooth_object(shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8) of a smooth ellipsoid (logistic edge, a gentle gradient
    behind it, no zeros so nothing is cropped) a little off the centre."""
    rng = np.random.default_rng(seed)
    centre = np.asarray(shape) / 2 + rng.uniform(-2, 2, 3)
    axes = np.ogrid[tuple(slice(0, n) for n in shape)]
    radii = np.asarray(shape) * np.array([0.22, 0.27, 0.3])
    r = np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(axes, centre, radii, strict=True)))
    image = 60 + 0.1 * axes[0] + 120 / (1 + np.exp(6 * (r - 1)))
    return image.astype(np.float32), (r < 1).astype(np.uint8)


def configuration_entry(patch, median_shape, batch: int) -> dict:
    """A 3-D configuration as nnU-Net's ExperimentPlanner writes it for a 1 mm isotropic
    single-channel dataset: its topology (`get_pool_and_conv_props`) for `patch`, 32 base
    features doubling to 320, 2 convs per stage, InstanceNorm3d, LeakyReLU, z-scoring."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
    _, strides, kernels, patch, _ = get_pool_and_conv_props((1.0, 1.0, 1.0), patch, 4, 999999)
    stages = len(strides)
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "data_identifier": f"nnUNetPlans_{CONFIG}", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch, "patch_size": [int(p) for p in patch],
        "median_image_size_in_voxels": [float(n) for n in median_shape], "spacing": [1.0, 1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling,
        "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": stages, "features_per_stage": [min(320, 32 * 2 ** i) for i in range(stages)],
                "conv_op": "torch.nn.modules.conv.Conv3d",
                "kernel_sizes": [[int(k) for k in ks] for ks in kernels],
                "strides": [[int(s) for s in ss] for ss in strides],
                "n_conv_per_stage": [2] * stages, "n_conv_per_stage_decoder": [2] * (stages - 1),
                "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                "dropout_op": None, "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False}


def write_plans(root: Path, sizes: Sizes, image: np.ndarray, label: np.ndarray) -> dict:
    """nnUNetPlans.json and dataset.json under root/preprocessed (where `nnunet_app.model_folder`
    reads them): the predicted configuration and the train-step one; the intensity facts of
    the object's voxels, as nnU-Net's fingerprint has them."""
    foreground = image[label > 0]
    stats = {"max": float(foreground.max()), "mean": float(foreground.mean()),
             "median": float(np.median(foreground)), "min": float(foreground.min()),
             "percentile_00_5": float(np.percentile(foreground, 0.5)),
             "percentile_99_5": float(np.percentile(foreground, 99.5)), "std": float(foreground.std())}
    plans = {"dataset_name": nnunet_app.NAME, "plans_name": "nnUNetPlans",
             "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
             "original_median_shape_after_transp": list(sizes.volume), "image_reader_writer": "SimpleITKIO",
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
             "configurations": {
                 CONFIG: configuration_entry(sizes.patch, sizes.volume, sizes.batch),
                 TRAIN_CONFIG: configuration_entry(sizes.train_patch, sizes.volume, sizes.batch)},
             "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {"0": stats}}
    folder = root / "preprocessed" / nnunet_app.NAME
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(DATASET, indent=1))
    return plans


def write_case(folder: Path, name: str, image: np.ndarray, label: np.ndarray | None = None):
    """`name`_0000.nii.gz in folder/images (and `name`.nii.gz in folder/labels), 1 mm voxels."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    files = [folder / "images" / f"{name}_0000.nii.gz"]
    nnunet_app._write(image, (1.0, 1.0, 1.0), files[0])
    if label is None:
        return files, None
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    nnunet_app._write(label, (1.0, 1.0, 1.0), folder / "labels" / f"{name}.nii.gz", np.uint8)
    return files, folder / "labels" / f"{name}.nii.gz"


# --- 1. predict one volume ----------------------------------------------------------------------

def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _calls(fn, calls: int) -> tuple[float, float | None]:
    """(first call's seconds, median of the later ones or None)."""
    times = [_timed(fn) for _ in range(calls)]
    return times[0], (float(np.median(times[1:])) if len(times) > 1 else None)


def predict_rows(root: Path, sizes: Sizes, mirroring_modes, calls: int) -> list[str]:
    import torch

    from unet_jax.inference import sliding_window
    from unet_jax.inference.nnunet import NnunetPredictor, open_folds
    image, _ = smooth_object(sizes.volume, seed=1)
    files, _ = write_case(root / "predict", "case_000", image)
    folder = nnunet_app.model_folder(root, CONFIG, folds=1)
    torch.set_num_threads(os.cpu_count())  # what nnUNetv2_predict -device cpu sets
    started = time.perf_counter()
    models = open_folds(folder, [0])
    imported = time.perf_counter() - started
    voxels = float(np.prod(sizes.volume))
    windows = len(sliding_window.windows(sizes.volume, sizes.patch, 0.5))
    rows = []
    for mirroring in mirroring_modes:
        tag = "mirrored" if mirroring else "no-mirroring"
        ours, theirs = root / f"ours_{tag}", root / f"nnunet_{tag}"
        ours.mkdir(exist_ok=True)
        predictor = NnunetPredictor(models, mirroring=mirroring)
        first, later = _calls(lambda p=predictor, o=ours: p.predict_files(files, o / "case_000.nii.gz"),
                              calls)
        nn_first, nn_later = _calls(lambda t=theirs, m=mirroring: _quietly(
            nnunet_app.nnunet_predict, folder, [files], t, [0], m), calls)
        same = nnunet_app.agreement(ours, theirs)["case_000.nii.gz"][0]
        case = f"{_shape(sizes.volume)}, patch {_shape(sizes.patch)} ({windows} windows), {tag}"
        before = len(rows)
        rows.append(_predict_row("unet-jax NnunetPredictor", case, first, later, windows, voxels,
                                 f"agreement {same:.5f}; import of the fold {imported:.1f} s"))
        rows.append(_predict_row("nnunetv2 nnUNetPredictor (torch eager)", case, nn_first, nn_later, windows,
                                 voxels, "incl. its initialize_from_trained_model_folder"))
        if later and nn_later:
            rows.append(f"| ratio unet-jax / nnU-Net | {case} | {first / nn_first:.2f} | "
                        f"{later / nn_later:.2f} | | | |")
        print("\n".join(rows[before:]), flush=True)
    return rows


def _quietly(fn, *args):
    """fn(*args) with its prints (nnU-Net's progress lines) swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def _predict_row(name: str, case: str, first: float, later: float | None, windows: int, voxels: float,
                 note: str) -> str:
    steady = later if later is not None else first
    later_text = f"{later:.1f}" if later is not None else "-"
    return (f"| {name} | {case} | {first:.1f} | {later_text} | {steady / windows:.2f} | "
            f"{voxels / steady / 1e6:.3f} | {note} |")


PREDICT_HEADER = ("| predictor | case, patch, mirroring | first call s | later call s (median) | "
                  "s / window (later) | Mvoxel/s (later) | notes |\n|---|---|---|---|---|---|---|")


# --- 2. input pipeline against the train step ---------------------------------------------------

def cached_case(root: Path, plans: dict, sizes: Sizes):
    """The 1-channel case of `sizes.cached` voxels preprocessed and cached (`prepare_cases`)."""
    from unet_jax.data.nnunet_preprocessing import configuration
    from unet_jax.data.volume_layouts import VolumeCase
    from unet_jax.data.volume_patches import CACHE_ENV, prepare_cases
    os.environ[CACHE_ENV] = str(root / "cache")
    image, label = smooth_object(sizes.cached, seed=2)
    files, label_file = write_case(root / "train", "blob_000", image, label)
    case = VolumeCase("blob_000", tuple(files), label_file)
    return prepare_cases([case], plans, CONFIG, configuration(plans, CONFIG), [1], threads=1)[0]


def pipeline_rate(case, patch, sizes: Sizes, threads: int) -> float:
    """Patch samples/s that `epoch_samples` + `prefetched` deliver with `threads` grain threads
    (nnU-Net's default augmentation for `patch`), after one warm-up batch."""
    from unet_jax.data import pipeline
    from unet_jax.data.volume_augment import VolumeAugmentation
    from unet_jax.data.volume_patches import VolumePatches
    count = sizes.pipeline_batches + 1
    patches = VolumePatches([case], patch, sizes.batch, count * sizes.batch,
                            VolumeAugmentation.for_patch(patch))
    samples = pipeline.epoch_samples(patches, sizes.batch, epoch=0, seed=0)
    batches = pipeline.prefetched(samples, sizes.batch, 0, threads)
    next(batches)
    started = time.perf_counter()
    drawn = sum(len(batch["image"]) for batch in batches)
    return drawn / (time.perf_counter() - started)


def step_times(plans: dict, sizes: Sizes, repeats: int, batch: dict) -> tuple[float, float, str]:
    """(first call s incl. compile, median of `repeats` later steps, the network) of the
    train step of the nnU-Net network planned for the train patch, on one drawn batch."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from unet_jax.data.nnunet_preprocessing import configuration
    from unet_jax.models import outputs
    from unet_jax.train.config import TrainConfig
    from unet_jax.train.optimizer import make_optimizer
    from unet_jax.train.steps import make_steps
    from unet_jax.train.volumes import NnunetSource, training_network, with_nnunet_defaults
    config = configuration(plans, TRAIN_CONFIG)
    source = NnunetSource(plans, DATASET, TRAIN_CONFIG, None, "fresh network", None)
    model = training_network(source, seed=0)
    shape = (1, *sizes.train_patch, 1)
    heads = len(outputs.heads(nnx.eval_shape(lambda: model(jnp.zeros(shape)))))
    cfg = with_nnunet_defaults(TrainConfig(batch_size=sizes.batch, data_threads=0, progress=False), config,
                               len(DATASET["labels"]), heads)
    optimizer = nnx.Optimizer(model, make_optimizer(cfg, model, cfg.steps_per_epoch), wrt=nnx.Param)
    train_step, _ = make_steps(cfg)
    images, labels = jnp.asarray(batch["image"]), jnp.asarray(batch["mask"])

    def step():
        jax.block_until_ready(train_step(model, optimizer, images, labels))
    first = _timed(step)
    median = float(np.median([_timed(step) for _ in range(repeats)]))
    kwargs = config["architecture"]["arch_kwargs"]
    network = (f"PlainConvUNet {kwargs['n_stages']} stages {kwargs['features_per_stage'][0]}.."
               f"{kwargs['features_per_stage'][-1]}, {heads} heads, {cfg.loss}, SGD Nesterov")
    return first, median, network


def pipeline_rows(root: Path, plans: dict, sizes: Sizes, repeats: int) -> list[str]:
    from unet_jax.data import pipeline
    from unet_jax.data.volume_augment import VolumeAugmentation
    from unet_jax.data.volume_patches import VolumePatches
    case = cached_case(root, plans, sizes)
    rows = []
    for patch in dict.fromkeys((sizes.patch, sizes.train_patch)):
        rates = {threads: pipeline_rate(case, patch, sizes, threads) for threads in (0, 2)}
        box = _shape(VolumeAugmentation.for_patch(patch).initial_patch_size())
        cells = f"| {_shape(patch)} (box {box}) | {rates[0]:.2f} | {rates[2]:.2f} |"
        if patch != sizes.train_patch:
            rows.append(f"{cells} not timed | | |")
            print(rows[-1], flush=True)
            continue
        drawn = VolumePatches([case], patch, sizes.batch, sizes.batch, VolumeAugmentation.for_patch(patch))
        batch = next(pipeline.prefetched(pipeline.epoch_samples(drawn, sizes.batch, epoch=0, seed=0),
                                         sizes.batch, 0, 0))
        first, median, network = step_times(plans, sizes, repeats, batch)
        consumed = sizes.batch / median
        rows.append(f"{cells} {median:.2f} s (first call {first:.1f} s, compile ~{first - median:.1f} s); "
                    f"{network} | {consumed:.3g} | {rates[0] / consumed:.0f} / {rates[2] / consumed:.0f} |")
        print(rows[-1], flush=True)
    return rows


PIPELINE_HEADER = ("| patch (augmentation box) | pipeline samples/s, 0 threads "
                   "| pipeline samples/s, 2 threads | train step, batch 2 (median) | step consumes samples/s "
                   "| delivered / consumed "
                   "(0 / 2 threads) |\n|---|---|---|---|---|---|")


# --- main ---------------------------------------------------------------------------------------

def run(root: Path, args, sizes: Sizes) -> None:
    nnunet_app._environment(root)
    image, label = smooth_object(sizes.volume, seed=1)
    plans = write_plans(root, sizes, image, label)
    machine = machine_line()
    print(machine, flush=True)
    if "predict" in args.parts:
        modes = (False, True) if args.mirroring else (False,)
        print(f"\n### Predict one volume (1 fold, step 0.5, Gaussian; {CONFIG} patch "
              f"{_shape(sizes.patch)})\n\n{PREDICT_HEADER}", flush=True)
        rows = predict_rows(root, sizes, modes, args.predict_calls)
        print(f"\n{machine}\n\n{PREDICT_HEADER}\n" + "\n".join(rows), flush=True)
    if "pipeline" in args.parts:
        print(f"\n### Input pipeline against the train step (cached case 1x{_shape(sizes.cached)}, batch "
              f"{sizes.batch}, {sizes.pipeline_batches} batches timed)\n\n{PIPELINE_HEADER}", flush=True)
        rows = pipeline_rows(root, plans, sizes, args.repeats)
        print(f"\n{machine}\n\n{PIPELINE_HEADER}\n" + "\n".join(rows), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: every code path, a smoke run")
    p.add_argument("--repeats", type=int, default=3, help="train steps timed after the first call")
    p.add_argument("--predict-calls", type=int, default=2, help="predictions per predictor (first + later)")
    p.add_argument("--mirroring", action="store_true", help="also predict with mirroring (8x the work)")
    p.add_argument("--train-patch", type=int, nargs=3,
                   help="the train step's patch (default 48 96 96: 64 128 128 takes ~150 s a step here)")
    p.add_argument("--parts", nargs="*", default=["predict", "pipeline"], choices=["predict", "pipeline"])
    p.add_argument("--root", help="keep data, plans and model folder here (default: a temporary folder)")
    args = p.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.train_patch:
        sizes = dataclasses.replace(sizes, train_patch=tuple(args.train_patch))
    started = time.perf_counter()
    if args.root:
        run(Path(args.root), args, sizes)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_volumes_") as root:
            run(Path(root), args, sizes)
    print(f"\nwall time {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
