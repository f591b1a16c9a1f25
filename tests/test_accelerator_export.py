"""The programs a GPU or TPU runs, lowered for `cuda` and `tpu` on this CPU machine (as
`jax.export` does) and read as StableHLO: plain convolutions (no CPU kernels), mixed
precision as stated, donated state aliased.

On a GPU/TPU host the CPU kernels are not even traced: that program is the one traced here
with `UNET_JAX_CPU_KERNELS=0` (the whole matrix). From a CPU host with the kernels on,
`unet_jax.programs` must still trace without them (every arch, the default setting).
"""

import jax
import jax.numpy as jnp
import pytest
from conftest import SMALL
from flax import nnx

from unet_jax import nn, programs, registry
from unet_jax.kernels import cpu
from unet_jax.train import TrainConfig
from unet_jax.train.model import make_model, resolve
from unet_jax.train.optimizer import make_optimizer

PLATFORMS = ("cuda", "tpu")
SIZE = {"semseg_unet": (188, 188), "labml_unet": (64, 64), "resnet50_unet": (64, 64),
        "smp_unet": (64, 64)}


def _setup(arch: str, dtype: str, remat: bool):
    kwargs = dict(SMALL[arch][0])
    spec = registry.get_arch(arch)
    classes = kwargs.pop(spec.uniform["num_classes"], None) or kwargs.pop("num_classes")
    size = SIZE.get(arch, (32, 32))
    cfg, _ = resolve(TrainConfig(arch=arch, model=kwargs, num_classes=classes,
                                             image_size=size[0], dtype=dtype, remat=remat))

    def build():  # abstract (shapes only): lowering needs no values
        model, _ = make_model(cfg)
        return model, nnx.Optimizer(model, make_optimizer(cfg, model, 10), wrt=nnx.Param)

    model, optimizer = nnx.eval_shape(build)
    return cfg, model, optimizer, size


def _conv_calls(model, size) -> int:
    """How many times the forward applies a conv layer (R2U-Nets reuse one conv t+1 times;
    smp builds scSE gates it never applies)."""
    calls = []
    originals = {cls: cls.__call__ for cls in (nn.Conv2d, nn.ConvTranspose2d)}

    def counted(original):
        return lambda self, x: calls.append(1) or original(self, x)

    try:
        for cls, original in originals.items():
            cls.__call__ = counted(original)
        channels = registry.uniform_option(model, "in_channels")
        nnx.eval_shape(lambda m: m(jnp.zeros((1, *size, channels))), model)
    finally:
        for cls, original in originals.items():
            cls.__call__ = original
    return len(calls)


@pytest.fixture
def accelerator_host(monkeypatch):
    monkeypatch.setenv(cpu.ENV, "0")


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_eval_forward_is_one_plain_convolution_per_conv_layer(arch):
    _, model, _, size = _setup(arch, "float32", False)
    model.eval()
    for dtype in ("float32", "bfloat16"):
        program = programs.lower_eval_forward(model, 2, size, PLATFORMS, dtype)
        for text in program.text.values():
            assert programs.op_counts(text).get("stablehlo.dot_general", 0) == 0, \
                "GEMMs: a CPU kernel leaked"
            short = {"float32": "f32", "bfloat16": "bf16"}[dtype]
            assert programs.convolutions(text) == [(short, short, short)] * _conv_calls(model, size)


def _check_train_step(arch: str, dtype: str, remat: bool) -> None:
    """Every conv is a `stablehlo.convolution` with its input and kernel gradients also
    convolutions (3 per layer, but for the image's own gradient), no GEMM anywhere; in
    bf16 they convolve in bf16 while parameters, BatchNorm statistics, optimizer state, the
    loss and every long sum stay float32; the model and optimizer state are donated."""
    cfg, model, optimizer, size = _setup(arch, dtype, remat)
    program = programs.lower_train_step(cfg, model, optimizer, 2, size, PLATFORMS)
    state_leaves = len(jax.tree.leaves(nnx.state((model, optimizer))))
    state_in, state_out = program.in_avals[:state_leaves], program.out_avals[:-1]
    floats = {a.dtype for a in state_in if jnp.issubdtype(a.dtype, jnp.floating)}
    assert floats == {jnp.dtype(jnp.float32)}
    assert program.out_avals[-1].dtype == jnp.float32  # the loss
    assert [a.dtype for a in state_out] == [a.dtype for a in state_in]
    short = {"float32": "f32", "bfloat16": "bf16"}[dtype]
    for platform, text in program.text.items():
        counts = programs.op_counts(text)
        assert counts.get("stablehlo.dot_general", 0) == 0, f"{platform}: GEMMs, a CPU kernel leaked"
        convs = programs.convolutions(text)
        assert len(convs) == counts["stablehlo.convolution"] == 3 * _conv_calls(model, size) - 1
        assert set(convs) == {(short, short, short)}
        assert text.count("tf.aliasing_output") == state_leaves
        # bf16 sums only of the 2 terms of a 2x upsampling's adjoint; BatchNorm statistics,
        # bias gradients and the loss accumulate in f32
        sums = programs.sums(text)
        assert {t for t, _ in sums} <= {"f32", "bf16", "i32"}
        assert max(n for t, n in sums if t == "f32") >= 2 * 32 * 32
        assert all(n <= 2 for t, n in sums if t == "bf16"), sorted(set(sums))


# The whole dtype x remat matrix for the first six archs; for the later ones (same layers)
# its two corners, to keep CI's time.
FULL_MATRIX = {"semseg_unet", "labml_unet", "imgseg_unet", "unetpp", "vgg16_unet", "resnet50_unet"}
VARIANTS = [("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True)]


@pytest.mark.parametrize("arch, dtype, remat", [
    (arch, dtype, remat) for arch in sorted(SMALL) for dtype, remat in VARIANTS
    if arch in FULL_MATRIX or (dtype, remat) in (VARIANTS[0], VARIANTS[3])])
@pytest.mark.slow
def test_train_step_as_an_accelerator_host_traces_it(arch, dtype, remat, accelerator_host):
    _check_train_step(arch, dtype, remat)


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_train_step_lowered_from_a_cpu_host_holds_no_cpu_kernel(arch):
    assert cpu.enabled()
    _check_train_step(arch, "float32", False)
