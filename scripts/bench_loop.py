"""The real training loop, JAX vs torch, over the same generated folder of JPEG images and
PNG masks with the same augmentation (random scaled crop + flip), model, batch and SGD:

- JAX: `unet_jax.train.train` (grain threads decoding ahead, uint8 batches, no per-step
  read-back); torch: an eager loop over `DataLoader(num_workers=...)`.
- Both also step-only, on one batch already on the device, so the pipeline's overhead
  shows: loop / step-only.

Images/s of the second epoch (the first compiles). `python scripts/bench_loop.py --help`.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

AUGMENT = "basic"  # RandomResizedCrop + horizontal flip, in both loops


def make_folder(root: Path, train: int, val: int, size=(500, 375), classes: int = 4) -> None:
    """`root/{train,val}/{images,masks}`: JPEG photos-like shapes and PNG class masks."""
    from unet_jax.data.datasets import Shapes
    for split, n, seed in (("train", train, 0), ("val", val, 1)):
        shapes = Shapes(n, height=size[1], width=size[0], num_classes=classes, seed=seed)
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image, mask = shapes[i]
            Image.fromarray(image).save(root / split / "images" / f"{i:04d}.jpg", quality=90)
            Image.fromarray(mask).save(root / split / "masks" / f"{i:04d}.png")


def jax_loop(args, root: Path, threads: int) -> float:
    from unet_jax.train import TrainConfig, train
    with tempfile.TemporaryDirectory() as workdir:
        cfg = TrainConfig(arch=args.arch, model=args.model, num_classes=args.classes,
                          data=f"folder:{root}", image_size=args.size, batch_size=args.batch,
                          epochs=2, augment=args.augment, optimizer="sgd", lr=0.01, weight_decay=0.0,
                          schedule="constant", loss="ce", data_threads=threads,
                          progress=False, workdir=workdir, log_every=args.log_every)
        return train(cfg)["train_images_per_s"]


def jax_step_only(args) -> float:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from unet_jax.train import TrainConfig
    from unet_jax.train.model import make_model, resolve
    from unet_jax.train.optimizer import make_optimizer
    from unet_jax.train.steps import make_steps
    cfg, _ = resolve(TrainConfig(arch=args.arch, model=args.model, num_classes=args.classes,
                                     image_size=args.size, optimizer="sgd", lr=0.01,
                                     weight_decay=0.0, schedule="constant", loss="ce"))
    model, _ = make_model(cfg)
    optimizer = nnx.Optimizer(model, make_optimizer(cfg, model, 1), wrt=nnx.Param)
    step, _ = make_steps(cfg)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (args.batch, args.size, args.size, 3), np.uint8))
    masks = jnp.asarray(rng.integers(0, args.classes, (args.batch, args.size, args.size), np.uint8))
    jax.block_until_ready(step(model, optimizer, images, masks))  # compile
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step(model, optimizer, images, masks)
    jax.block_until_ready(loss)
    return args.steps * args.batch / (time.perf_counter() - t0)


def torch_model(args):
    from unet_jax import registry
    from unet_jax.parity import harness
    return harness.reference_for(registry.make_config(args.arch, num_classes=args.classes,
                                                      **args.model)).train()


class TorchFolder:
    """The same samples and augmentation as the JAX loop, as torch tensors."""

    def __init__(self, root: Path, size: int, classes: int, spec: str, seed: int = 0):
        from unet_jax.data import datasets, layouts
        pairs = tuple(layouts.detect(root).splits["train"])
        self.data, self.seed, self.epoch = datasets.FileDataset(pairs, classes, size, size), seed, 0
        self.spec, self.augment = spec, None  # built in each worker process

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        import torch

        from unet_jax.data import augment
        self.augment = self.augment or augment.pipeline(self.spec) or (lambda *sample: sample[:2])
        image, mask = self.augment(*self.data[i], np.random.default_rng([self.seed, self.epoch, i]))
        return torch.from_numpy(np.array(image)).permute(2, 0, 1), torch.from_numpy(np.array(mask)).long()


def torch_loop(args, root: Path) -> float:
    import torch
    model = torch_model(args)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dataset = TorchFolder(root, args.size, args.classes, args.augment)
    loader = torch.utils.data.DataLoader(dataset, args.batch, shuffle=True, drop_last=True,
                                         num_workers=args.torch_workers,
                                         persistent_workers=args.torch_workers > 0,
                                         multiprocessing_context="forkserver"  # JAX has threads
                                         if args.torch_workers > 0 else None)
    rate = 0.0
    for epoch in range(2):
        dataset.epoch, seen, t0 = epoch, 0, time.perf_counter()
        for images, masks in loader:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(images.float() / 255), masks, ignore_index=255)
            loss.backward()
            opt.step()
            seen += len(images)
        rate = seen / (time.perf_counter() - t0)
    return rate


def pipeline_only(args, root: Path, threads: int) -> float:
    """Images/s of the JAX loop's input pipeline alone (decode, fit, augment, batch in grain
    threads), over one epoch of the training split."""
    from unet_jax.data import augment, datasets, layouts, pipeline
    pairs = tuple(layouts.detect(root).splits["train"])
    dataset = datasets.FileDataset(pairs, args.classes, args.size, args.size)
    samples = pipeline.epoch_samples(dataset, args.batch, epoch=0, seed=0,
                                 augment=augment.pipeline(args.augment))
    start, seen = time.perf_counter(), 0
    for batch in pipeline.prefetched(samples, args.batch, 0, threads):
        seen += len(batch["image"])
    return seen / (time.perf_counter() - start)


def torch_step_only(args) -> float:
    import torch
    model = torch_model(args)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.rand(args.batch, 3, args.size, args.size)
    masks = torch.randint(0, args.classes, (args.batch, args.size, args.size))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), masks).backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    return args.steps * args.batch / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="imgseg_unet")
    p.add_argument("--model", type=json.loads, default={},
                   help='arch options as JSON, e.g. {"base_width": 32}')
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--images", type=int, default=48, help="training images (val: 4)")
    p.add_argument("--steps", type=int, default=10, help="step-only timing steps")
    p.add_argument("--augment", default=AUGMENT, help="augmentation string of both loops (none: off)")
    p.add_argument("--threads", type=int, nargs="+", default=[4], help="JAX data_threads to try")
    p.add_argument("--torch-workers", type=int, default=2)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    from unet_jax.kernels.cpu import host_memory
    host_memory.keep_freed_memory()  # as `unet-jax train` does; process-wide: torch too
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_folder(root, args.images, 4)
        result = {"arch": args.arch, "model": args.model, "size": args.size, "batch": args.batch,
                  "images": args.images, "augment": args.augment}
        for threads in args.threads:
            result[f"pipeline_threads{threads}"] = pipeline_only(args, root, threads)
        result["jax_step_only"] = jax_step_only(args)
        for threads in args.threads:
            result[f"jax_loop_threads{threads}"] = jax_loop(args, root, threads)
        result["torch_step_only"] = torch_step_only(args)
        result["torch_loop"] = torch_loop(args, root)
    best = max(v for k, v in result.items() if k.startswith("jax_loop"))
    print(json.dumps(result, indent=2))
    print("| loop | images/s | of its step-only rate |\n|---|---|---|")
    for k in [k for k in result if k.startswith("jax_loop")]:
        print(f"| JAX {k[9:].replace('threads', 'data_threads=')} | {result[k]:.2f} | "
              f"{result[k] / result['jax_step_only']:.0%} |")
    print(f"| torch DataLoader(num_workers={args.torch_workers}) | {result['torch_loop']:.2f} | "
          f"{result['torch_loop'] / result['torch_step_only']:.0%} |")
    print(f"step-only: JAX {result['jax_step_only']:.2f}, torch {result['torch_step_only']:.2f} "
          f"images/s; best JAX loop / torch loop: {best / result['torch_loop']:.2f}x")
    print("input pipeline alone (images/s): " + ", ".join(
        f"{k[9:].replace('threads', 'data_threads=')} {v:.1f}" for k, v in result.items()
        if k.startswith("pipeline")))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
