"""Imported smp Unet(resnet34) against the hand-written smp_unet on the same weights:
inference and train-step time (jit, batch 2, 256x256, median of repeats) and compile times.

    python scripts/bench_import.py [--size 256] [--batch 2] [--repeats 5]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import unet_jax
from unet_jax.convert.torch_packages import import_smp


def timed(fn, *args, repeats: int):
    started = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - started
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - started)
    return compile_s, float(np.median(runs))


def programs(model):
    graphdef, state = nnx.split(model)

    @jax.jit
    def infer(state, x):
        return nnx.merge(graphdef, state)(x)

    @jax.jit
    def grad(state, x):
        def loss(params, rest):
            m = nnx.merge(graphdef, params, rest)
            return jnp.mean(m(x) ** 2)
        params, rest = nnx.split(nnx.merge(graphdef, state), nnx.Param, ...)[1:]
        return jax.grad(loss)(params, rest)

    return infer, grad, state


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    native = unet_jax.create_model("smp_unet", encoder_name="resnet34", classes=2)
    module = import_smp().Unet("resnet34", encoder_weights=None, classes=2)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in unet_jax.to_torch_state_dict(native).items()})
    imported = unet_jax.import_torch(module.eval(), torch.zeros(1, 3, args.size, args.size))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((args.batch, args.size, args.size, 3)),
                    jnp.float32)
    print(f"smp Unet(resnet34), batch {args.batch}, {args.size}x{args.size}, median of {args.repeats}")
    print("| model | infer | train (grad) | compile infer / train |\n|---|---|---|---|")
    rows = {}
    for name, model in (("smp_unet (hand-written)", native), ("imported", imported)):
        for m in (model,):
            m.eval()
        infer, _, state = programs(model)
        ci, ti = timed(infer, state, x, repeats=args.repeats)
        model.train()
        _, grad, state = programs(model)
        cg, tg = timed(grad, state, x, repeats=args.repeats)
        rows[name] = (ti, tg)
        print(f"| {name} | {ti * 1e3:.0f} ms | {tg * 1e3:.0f} ms | {ci:.1f} s / {cg:.1f} s |", flush=True)
    (a, b), (c, d) = rows.values()
    print(f"imported / hand-written: infer {c / a:.2f}x, train {d / b:.2f}x")


if __name__ == "__main__":
    main()
