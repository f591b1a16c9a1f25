"""Print the README's parity table: every arch at upstream widths, seeded random torch
weights and BatchNorm statistics, float32 at two sizes and float64 at one.
python scripts/parity_table.py [ARCH ...]   (default: every registered arch)"""

import sys

import jax
import numpy as np

import unet_jax
from unet_jax import registry
from unet_jax.parity import harness

SIZES = {"semseg_unet": [(188, 188), (252, 204)], "resnet50_unet": [(64, 64), (96, 128)],
         "milesial_unet": [(64, 64), (97, 75)], "smp_unet": [(64, 64), (97, 75)]}


def worst(reference, model, size, dtype):
    x = np.random.default_rng(0).standard_normal((1, *size, 3)).astype(dtype)
    outs = harness.compare_outputs(harness.torch_forward(reference, x), harness.jax_forward(model, x))
    return max(d.max_rel for d in outs)


def main(archs: list[str]):
    print("| arch | params | fp32, size A | fp32, size B (non-square) | fp64 |")
    print("|---|---|---|---|---|")
    for arch in archs or registry.list_models():
        config = registry.make_config(arch, **({"deep_supervision": True} if arch == "unetpp" else {}))
        reference = harness.random_reference(config, seed=0)
        state = {k: v.numpy() for k, v in reference.state_dict().items()}
        extra = {"deep_supervision": True} if arch == "unetpp" else {}
        model = unet_jax.load_torch(state, **extra)
        a, b = SIZES.get(arch, [(64, 64), (96, 64)])
        f32 = [worst(reference, model, s, np.float32) for s in (a, b)]
        jax.config.update("jax_enable_x64", True)
        f64 = worst(reference.double(), unet_jax.load_torch(state, dtype=np.float64, **extra), a,
                    np.float64)
        jax.config.update("jax_enable_x64", False)
        reference.float()
        n = sum(v.numel() for v in reference.parameters())
        print(f"| {arch} | {n:,} | {f32[0]:.1e} ({a[0]}x{a[1]}) | {f32[1]:.1e} ({b[0]}x{b[1]}) | "
              f"{f64:.1e} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
