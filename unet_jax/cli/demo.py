"""`unet-jax demo`: the end-to-end demo on embedded defaults (needs torch: it proves parity)."""

from pathlib import Path

import jax
import numpy as np

import unet_jax
from unet_jax import presets, registry
from unet_jax.convert.io import write_state_dict
from unet_jax.models import recorded
from unet_jax.train import TrainConfig, make_datasets, train


def cmd_demo(args) -> int:
    """The end-to-end demo: parity of every arch, then a seeded torch checkpoint -> convert
    -> parity -> train on synthetic data on all local devices -> save -> export to torch
    -> torch reproduces the JAX predictions."""
    import torch

    from unet_jax.parity import harness
    workdir = Path(args.workdir)
    for n in range(2, 1000):  # a fresh directory for every run: runs/demo, runs/demo-2, ...
        if not (workdir.exists() and any(workdir.iterdir())):
            break
        workdir = Path(f"{args.workdir}-{n}")
    workdir.mkdir(parents=True, exist_ok=True)

    print("== 1. parity: a seeded torch checkpoint of every arch at upstream widths")
    failures = 0
    for arch in registry.list_models():
        reference = harness.random_reference(registry.make_config(arch), seed=args.seed)
        state = {k: v.numpy() for k, v in reference.state_dict().items()}
        size = (registry.get_arch(arch).sizes.at_least(64),) * 2
        result = harness.check_state_dict(state, unet_jax.load_torch(state), size)
        worst = max(d.max_rel for d in result.outputs)
        print(f"  {arch:<14} {len(result.layers):>3} layers, output max rel diff {worst:.1e} "
              f"{'PASS' if result.ok else 'FAIL'}")
        failures += not result.ok

    print("\n== 2. torch checkpoint -> convert -> parity")
    config = registry.make_config("imgseg_unet", output_ch=args.classes, base_width=16)
    reference = harness.random_reference(config, seed=args.seed)
    checkpoint = workdir / "torch_init.pth"
    torch.save(reference.state_dict(), checkpoint)
    model = unet_jax.load_torch(checkpoint)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    result = harness.check_state_dict(state, model, (args.size, args.size))
    print(f"  {checkpoint}: {model.config}\n  " + result.format().replace("\n", "\n  "))
    failures += not result.ok

    print(f"\n== 3. train from it on synthetic shapes on {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s)")
    cfg = TrainConfig(arch="imgseg_unet", model={"base_width": 16},
                            num_classes=args.classes, init_from=str(checkpoint),
                            image_size=args.size, epochs=args.epochs, lr=3e-3, warmup_epochs=0.5,
                            batch_size=16, seed=args.seed, workdir=str(workdir / "train"))
    summary = train(cfg)
    chance = 1.0 / args.classes
    print(f"  final val mIoU {summary['miou']:.3f} (pixel acc {summary['pixel_acc']:.3f}); "
          f"a constant prediction scores about {chance:.2f}")
    failures += summary["miou"] < 0.5

    print("\n== 4. save -> export to torch -> torch reproduces the JAX predictions")
    trained = summary["model"]
    trained.eval()
    saved = unet_jax.save(trained, workdir / "model")
    reloaded = unet_jax.load(saved)
    exported = write_state_dict(unet_jax.to_torch_state_dict(reloaded), workdir / "exported.pth")
    back = harness.reference_for(reloaded.config)
    back.load_state_dict(torch.load(exported, weights_only=True), strict=True)
    val = make_datasets(cfg)[1]
    preset = presets.get(recorded.preset_of(reloaded))  # normalised as the model was trained
    images = np.asarray(preset.normalize(np.stack([val[i][0] for i in range(8)])))
    torch_logits = harness.torch_forward(back.eval(), images)[0]
    jax_logits = np.asarray(reloaded(images))
    check = harness.diff("predictions", torch_logits, jax_logits, argmax=True)
    print(f"  saved {saved}, exported {exported}\n  torch vs JAX on 8 validation images: max rel "
          f"diff {check.max_rel:.1e}, argmax agreement {check.argmax_agreement:.2f}%")
    failures += check.max_rel > harness.TOLERANCE["float32"]
    print(f"\npictures: {workdir / 'train' / 'curves.png'}, {workdir / 'train' / 'predictions.png'}")
    print("demo " + ("PASSED" if not failures else f"FAILED ({failures} checks)"))
    return 1 if failures else 0


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="the end-to-end demo on embedded defaults")
    d.add_argument("--workdir", default="runs/demo",
                   help="outputs go here, or to WORKDIR-2, -3, ... if it is not empty")
    d.add_argument("--epochs", type=int, default=6)
    d.add_argument("--classes", type=int, default=4)
    d.add_argument("--size", type=int, default=64, help="image size (a multiple of 16)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(fn=cmd_demo)
