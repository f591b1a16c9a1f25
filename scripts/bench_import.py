"""Imported networks against torch eager on this machine: inference and train step (the
gradient of a mean-square loss in train mode), median seconds, and JAX's compile times; for
smp Unet(resnet34) also the hand-written `smp_unet` on the same weights. torchax is tried as
a third column (`torchax.extract_jax` under `jax.jit`) where it imports.

    python scripts/bench_import.py [--repeats 5] [--nets smp_unet smp_fpn monai_basic nnunet_3d]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import unet_jax


def _median(fn, repeats: int) -> tuple[float, float]:
    """(first call's seconds, median of `repeats` further calls)."""
    started = time.perf_counter()
    fn()
    first = time.perf_counter() - started
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return first, float(np.median(runs))


def nets():
    from unet_jax.convert.torch_packages import import_smp
    smp = import_smp()
    image = (2, 3, 256, 256)
    yield "smp_unet", "smp Unet(resnet34)", lambda: smp.Unet("resnet34", encoder_weights=None, classes=2), \
        image
    yield "smp_fpn", "smp FPN(resnet34)", lambda: smp.FPN("resnet34", encoder_weights=None, classes=2), image
    from monai.networks.nets import BasicUNet
    yield "monai_basic", "MONAI BasicUNet 2-D", lambda: BasicUNet(2, 3, 2), image
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    nn = torch.nn
    yield "nnunet_3d", "nnU-Net PlainConvUNet 3-D", lambda: PlainConvUNet(
        1, 5, (32, 64, 128, 256, 320), nn.Conv3d, 3, (1, 2, 2, 2, 2), 2, 3, 2, True, nn.InstanceNorm3d,
        {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True}), (1, 1, 64, 128, 128)


def jax_times(model, x, repeats: int):
    graphdef, state = nnx.split(model)
    infer = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    model.train()
    graphdef_t, state_t = nnx.split(model)

    @jax.jit
    def grad(state, x):
        m = nnx.merge(graphdef_t, state)
        return nnx.state(nnx.grad(lambda m: jnp.mean(m(x) ** 2))(m), nnx.Param)

    ci, ti = _median(lambda: jax.block_until_ready(infer(state, x)), repeats)
    cg, tg = _median(lambda: jax.block_until_ready(grad(state_t, x)), repeats)
    return ti, tg, ci, cg


def torch_times(module, x, repeats: int):
    module.eval()
    with torch.no_grad():
        _, ti = _median(lambda: module(x), repeats)
    module.train()

    def step():
        module.zero_grad()
        (module(x) ** 2).mean().backward()
    _, tg = _median(step, repeats)
    return ti, tg


def torchax_times(module, x, repeats: int):
    try:
        import torchax
    except Exception as e:  # noqa: BLE001 (an import that fails for its own reasons)
        return f"not importable ({type(e).__name__}: {str(e)[:80]})"
    module.eval()
    weights, fn = torchax.extract_jax(module)
    xj = jnp.asarray(x.numpy())
    infer = jax.jit(fn)
    grad = jax.jit(jax.grad(lambda w, x: jnp.mean(fn(w, (x,)) ** 2)))
    _, ti = _median(lambda: jax.block_until_ready(infer(weights, (xj,))), repeats)
    _, tg = _median(lambda: jax.block_until_ready(grad(weights, xj)), repeats)
    return ti, tg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--nets", nargs="*")
    args = p.parse_args()
    print("| network | input | unet-jax infer / train | torch eager infer / train | ratio infer / train "
          "| JAX compile infer / train | torchax infer / train |\n|---|---|---|---|---|---|---|")
    for key, name, make, shape in nets():
        if args.nets and key not in args.nets:
            continue
        torch.manual_seed(0)
        module = make().eval()
        x = torch.randn(shape)
        model = unet_jax.import_torch(module, x[:1])
        xj = jnp.asarray(np.moveaxis(x.numpy(), 1, -1))
        ti, tg, ci, cg = jax_times(model, xj, args.repeats)
        ei, eg = torch_times(module, x, args.repeats)
        tx = torchax_times(module, x, args.repeats)
        tx = tx if isinstance(tx, str) else f"{tx[0] * 1e3:.0f} / {tx[1] * 1e3:.0f} ms"
        print(f"| {name} | {'x'.join(map(str, shape))} | {ti * 1e3:.0f} / {tg * 1e3:.0f} ms | "
              f"{ei * 1e3:.0f} / {eg * 1e3:.0f} ms | {ti / ei:.2f} / {tg / eg:.2f} | "
              f"{ci:.1f} / {cg:.1f} s | {tx} |", flush=True)
        if key == "smp_unet":
            native = unet_jax.load_torch({k: v.numpy() for k, v in module.state_dict().items()})
            ni, ng, nci, ncg = jax_times(native, xj, args.repeats)
            print(f"| hand-written smp_unet, same weights | {'x'.join(map(str, shape))} | "
                  f"{ni * 1e3:.0f} / {ng * 1e3:.0f} ms | | imported / hand-written {ti / ni:.2f} / "
                  f"{tg / ng:.2f} | {nci:.1f} / {ncg:.1f} s | |", flush=True)


if __name__ == "__main__":
    main()
