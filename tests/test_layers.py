"""Torch-semantics primitives against torch itself, and one training step against torch."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from conftest import random_input
from flax import nnx

import unet_jax
from unet_jax import nn, ops, registry
from unet_jax.kernels import cpu
from unet_jax.kernels.cpu import conv as cpu_conv
from unet_jax.kernels.cpu import policy, winograd
from unet_jax.nn import norm
from unet_jax.parity import harness
from unet_jax.train import losses


@pytest.fixture(params=["cpu kernels", "plain ops"])
def branch(request, monkeypatch):
    """Run a test with the CPU kernels and with the accelerators' plain ops (on CPU)."""
    monkeypatch.setenv(cpu.ENV, "1" if request.param == "cpu kernels" else "0")
    return request.param


def nchw(x):
    return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("k, stride, pad, size", [(3, 1, 1, 17), (3, 1, 0, 16), (3, 2, 1, 15),
                                                  (7, 2, 3, 18), (1, 2, 0, 9), (1, 1, 0, 8)])
def test_conv_gradients_match_xla(k, stride, pad, size):
    rng = np.random.default_rng(k + stride + size)
    x = jnp.asarray(rng.standard_normal((2, size, size + 3, 5)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, 5, 6)), jnp.float32)

    def reference(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride,) * 2, ((pad, pad),) * 2,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y, vjp = jax.vjp(lambda x, w: cpu_conv.conv_tapwise(x, w, stride, pad), x, w)
    y_ref, vjp_ref = jax.vjp(reference, x, w)
    dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    np.testing.assert_array_equal(y, y_ref)
    for got, want in zip(vjp(dy), vjp_ref(dy)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


@pytest.mark.parametrize("dtype, rtol", [(jnp.float32, 2e-5), (jnp.float64, 1e-12)])
@pytest.mark.parametrize("pad, h, w", [(1, 16, 16), (1, 9, 14), (0, 11, 8), (0, 3, 4)])
@pytest.mark.parametrize("winograd_input_grad", [True, False])
def test_winograd_conv_and_gradients_match_xla(dtype, rtol, pad, h, w, winograd_input_grad):
    """Even and odd output sizes (odd ones pad the last tile), 'same' and 'valid' padding."""
    with jax.enable_x64(dtype == jnp.float64):
        rng = np.random.default_rng(h * w + pad)
        x = jnp.asarray(rng.standard_normal((2, h, w, 6)), dtype)
        k = jnp.asarray(rng.standard_normal((3, 3, 6, 5)), dtype)
        reference = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1),
                                      padding=((pad, pad),) * 2, precision="highest",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y, vjp = jax.vjp(lambda x, k: winograd.conv3x3(x, k, pad, winograd_input_grad), x, k)
        y_ref, vjp_ref = jax.vjp(reference, x, k)
        dy = jnp.asarray(rng.standard_normal(y.shape), dtype)
        for got, want in zip((y, *vjp(dy)), (y_ref, *vjp_ref(dy))):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=rtol * float(jnp.abs(want).max()))


@pytest.mark.parametrize("dtype, rtol", [(jnp.float32, 2e-5), (jnp.float64, 1e-12)])
@pytest.mark.parametrize("h, w", [(8, 8), (9, 14), (2, 3)])
def test_winograd_2x2_correlation_matches_xla(dtype, rtol, h, w):
    """F(2x2, 2x2), even and odd output sizes (odd ones pad the last tile)."""
    with jax.enable_x64(dtype == jnp.float64):
        rng = np.random.default_rng(h * w)
        x = jnp.asarray(rng.standard_normal((2, h, w, 6)), dtype)
        k = jnp.asarray(rng.standard_normal((2, 2, 6, 5)), dtype)
        want = jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", precision="highest",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        got = winograd.correlate2x2(x, k)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=rtol * float(jnp.abs(want).max()))


@pytest.mark.parametrize("k, stride, pad, size", [(3, 1, 1, 12), (3, 1, 0, 9), (7, 2, 3, 14)])
@pytest.mark.parametrize("in_ch, out_ch", [(3, 20), (3, 8), (12, 8), (20, 8), (20, 24)])
def test_every_cpu_conv_algorithm_matches_xla(k, stride, pad, size, in_ch, out_ch, monkeypatch):
    """Stem products (3 inputs), XLA's conv (12 -> 8), Winograd (3x3 stride 1: 20 -> 8,
    20 -> 24) or tap GEMMs (7x7 stride 2, 20 -> 24)."""
    monkeypatch.setattr(cpu_conv, "POLICY", dataclasses.replace(policy.POLICY, winograd_min_macs=0))
    rng = np.random.default_rng(in_ch * out_ch + size)
    x = jnp.asarray(rng.standard_normal((2, size, size + 1, in_ch)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, in_ch, out_ch)), jnp.float32)
    reference = functools.partial(jax.lax.conv_general_dilated, window_strides=(stride,) * 2,
                                  padding=((pad, pad),) * 2, precision="highest",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y, vjp = jax.vjp(lambda x, w: ops.conv2d(x, w, stride, pad), x, w)
    y_ref, vjp_ref = jax.vjp(reference, x, w)
    dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    for got, want in zip((y, *vjp(dy)), (y_ref, *vjp_ref(dy))):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * float(jnp.abs(want).max()))


def test_winograd_is_used_on_cpu_from_the_channel_and_size_thresholds(monkeypatch):
    def lowered(in_ch, size=128, differentiated=True):
        x = jnp.zeros((1, size, size, in_ch), jnp.float32)
        k = jnp.zeros((3, 3, in_ch, 32), jnp.float32)
        conv = functools.partial(ops.conv2d, stride=1, padding=1)
        if differentiated:  # the forward that a gradient would use
            conv = lambda x, k, conv=conv: jax.vjp(conv, x, k)[0]  # noqa: E731
        # Compiled: under vjp the lowering still holds the other platforms' branch.
        return jax.jit(conv).lower(x, k).compile().as_text()

    channels = policy.POLICY.winograd_channels
    assert "convolution" not in lowered(channels)
    assert "convolution" in lowered(channels - 1)
    assert "convolution" in lowered(channels, size=8)
    # 128x128x16 -> 32 is 2^26 multiply-adds: under the inference threshold, XLA's conv.
    assert "convolution" in lowered(channels, differentiated=False)
    monkeypatch.setattr(cpu_conv, "POLICY",
                        dataclasses.replace(policy.POLICY, winograd_inference_min_macs=2**26))
    assert "convolution" not in lowered(channels, differentiated=False)
    monkeypatch.setenv(cpu.ENV, "0")  # the switch: XLA's convolution whatever the shape
    assert "convolution" in lowered(channels)


@pytest.mark.parametrize("pool, torch_args, h, w", [
    (nn.max_pool2, (2,), 8, 8), (nn.max_pool2, (2,), 7, 9),
    (nn.max_pool3_s2_ceil, (3, 2, 0, 1, True), 7, 8),
    (nn.max_pool3_s2_ceil, (3, 2, 0, 1, True), 16, 15),
    (nn.max_pool3_s2_ceil, (3, 2, 0, 1, True), 33, 34)])
def test_max_pools_and_their_gradients_match_torch_with_ties(pool, torch_args, h, w, branch):
    """Half the inputs are ReLU zeros and one window holds three equal maxima: the gradient
    must reach only the first maximum of each window, and overlapping windows must sum in
    torch's order (bit-equal)."""
    rng = np.random.default_rng(h)
    x = np.maximum(rng.standard_normal((2, h, w, 3)), 0).astype(np.float32)
    x[0, 0, 0, 0] = x[0, 0, 1, 0] = x[0, 1, 1, 0] = 5.0
    xt = nchw(x).requires_grad_()
    yt = F.max_pool2d(xt, *torch_args)
    dy = rng.standard_normal(nhwc(yt).shape).astype(np.float32)
    yt.backward(nchw(dy))
    y, vjp = jax.vjp(pool, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(y), nhwc(yt))
    np.testing.assert_array_equal(np.asarray(vjp(jnp.asarray(dy))[0]), nhwc(xt.grad))


def test_batch_norm_gradient_matches_autodiff():
    """The closed-form BatchNorm gradient, with cotangents on y and on the batch statistics."""

    def reference(x, gamma, beta):
        mean = x.mean(axis=(0, 1, 2))
        var = jnp.square(x - mean).mean(axis=(0, 1, 2))
        return (x - mean) / jnp.sqrt(var + norm.BN_EPS) * gamma + beta, mean, var

    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        args = [jnp.asarray(a) for a in (3 + rng.standard_normal((2, 5, 7, 4)),
                                         rng.standard_normal(4), rng.standard_normal(4))]
        cts = [jnp.asarray(rng.standard_normal(s)) for s in ((2, 5, 7, 4), (4,), (4,))]
        got = jax.vjp(norm.batch_norm_train, *args)[1](tuple(cts))
        want = jax.vjp(reference, *args)[1](tuple(cts))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("h, w", [(5, 7), (1, 16)])
def test_align_corners_bilinear_and_nearest(h, w, branch):
    x = random_input(h, w, 3)
    xt = nchw(x).requires_grad_()
    yt = F.interpolate(xt, scale_factor=2, mode="bilinear", align_corners=True)
    y, vjp = jax.vjp(nn.upsample_bilinear2, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), nhwc(yt), atol=1e-6)
    dy = random_input(2 * h, 2 * w, 3)
    yt.backward(nchw(dy))
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(dy))[0]), nhwc(xt.grad), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(nn.upsample_nearest2(jnp.asarray(x))),
                                  nhwc(F.interpolate(nchw(x), scale_factor=2)))


@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (4, 2, 1), (4, 2, 0), (6, 3, 0), (6, 2, 2), (3, 2, 1)])
def test_transposed_conv(k, s, p, branch):
    t = torch.nn.ConvTranspose2d(6, 5, k, stride=s, padding=p)
    layer = nn.ConvTranspose2d(6, 5, k, stride=s, padding=p, rngs=nnx.Rngs(0))
    layer.kernel[...] = jnp.asarray(t.weight.detach().numpy().transpose(2, 3, 0, 1))
    layer.bias[...] = jnp.asarray(t.bias.detach().numpy())
    x = random_input(6, 9, 6)
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), nhwc(t(nchw(x))), atol=1e-5)


@pytest.mark.parametrize("diff", range(8))
def test_center_crop_rounds_half_to_even(diff):
    skip = jnp.arange(20 + diff, dtype=jnp.float32)[None, :, None, None] * jnp.ones((1, 1, 3, 1))
    top = int(round(diff / 2))
    assert float(nn.center_crop(skip, 20, 3)[0, 0, 0, 0]) == top
    assert top == [0, 0, 1, 2, 2, 2, 3, 4][diff]


def test_one_training_step_matches_torch(branch):
    """Forward in train mode, CE loss, backward, SGD with momentum and weight decay: loss,
    new weights and BatchNorm running statistics (unbiased variance) agree with torch."""
    config = registry.make_config("imgseg_unet", base_width=4, output_ch=3)
    ref = harness.random_reference(config, seed=3).train()
    model = unet_jax.load_torch({k: v.numpy() for k, v in ref.state_dict().items()})
    model.train()
    x = random_input(32, 32)
    labels = np.random.default_rng(1).integers(0, 3, (2, 32, 32))
    labels[0, :4] = 255

    opt_t = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(2):
        opt_t.zero_grad()
        loss_t = F.cross_entropy(ref(nchw(x)), torch.from_numpy(labels), ignore_index=255)
        loss_t.backward()
        opt_t.step()

    tx = optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(0.1, momentum=0.9))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    def loss_fn(m):
        return losses.cross_entropy(m(jnp.asarray(x)), jnp.asarray(labels))

    step = nnx.jit(lambda model: nnx.value_and_grad(loss_fn)(model))  # traced in this branch
    for _ in range(2):
        loss_j, grads = step(model)
        optimizer.update(model, grads)

    loss_t = loss_t.item()
    assert abs(float(loss_j) - loss_t) <= 1e-5 * max(1.0, abs(loss_t))
    exported = unet_jax.to_torch_state_dict(model)
    for key, value in ref.state_dict().items():
        want = value.numpy()
        np.testing.assert_allclose(exported[key], want, rtol=1e-4,
                                   atol=1e-5 * max(1.0, float(np.abs(want).max())), err_msg=key)


@pytest.mark.parametrize(
    "k, s, p, size", [(4, 2, 1, 5), (3, 2, 1, 6), (4, 2, 0, 4), (6, 3, 3, 5), (4, 2, 2, 5)]
)
def test_transposed_conv_gradients_match_xla(k, s, p, size):
    """The CPU kernels' output-phase forward (XLA's convs or, for k == 2s, Winograd phases)
    and tap-GEMM gradients against XLA's dilated transposed conv and autodiff."""
    rng = np.random.default_rng(k * s + p)
    x = jnp.asarray(rng.standard_normal((2, size, size + 1, 5)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, 5, 3)), jnp.float32)
    y, vjp = jax.vjp(lambda x, w: ops.conv_transpose2d(x, w, s, p), x, w)
    y_ref, vjp_ref = jax.vjp(lambda x, w: ops._conv_transpose(x, w, s, p), x, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * float(jnp.abs(y_ref).max()))
    dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    for got, want in zip(vjp(dy), vjp_ref(dy)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


@pytest.mark.parametrize("k, s, p, winograd_phases", [(4, 2, 1, True), (4, 2, 0, True),
                                                      (6, 3, 0, True), (6, 2, 2, False),
                                                      (3, 2, 1, False)])
def test_winograd_phases_are_used_on_cpu_for_kernels_of_twice_the_stride(k, s, p, winograd_phases):
    x = jnp.zeros((1, 8, 8, 4), jnp.float32)
    w = jnp.zeros((k, k, 4, 3), jnp.float32)
    text = jax.jit(functools.partial(ops.conv_transpose2d, stride=s, padding=p)).lower(
        x, w).compile().as_text()
    assert ("convolution" not in text) == winograd_phases



@pytest.mark.parametrize("kernel", [(2,), (2, 3), (2, 2, 2), (1, 2, 3)])
def test_non_overlapping_transposed_conv_of_any_rank_matches_torch_and_xla(kernel):
    """ops.conv_transpose_taps (stride == kernel, no padding; the CPU's GEMM + depth-to-space)
    against torch's ConvTranspose{1,2,3}d and XLA's dilated conv, forward and gradients."""
    rng = np.random.default_rng(len(kernel))
    dn = len(kernel)
    x = rng.standard_normal((2, *(3 + i for i in range(dn)), 5)).astype(np.float32)
    w = rng.standard_normal((*kernel, 5, 4)).astype(np.float32)
    module = getattr(torch.nn, f"ConvTranspose{dn}d")(5, 4, kernel, stride=kernel, bias=False)
    module.weight.data = torch.from_numpy(np.ascontiguousarray(w.transpose(dn, dn + 1, *range(dn))))
    want = module(torch.from_numpy(np.moveaxis(x, -1, 1))).detach().numpy()
    y, vjp = jax.vjp(ops.conv_transpose_taps, jnp.asarray(x), jnp.asarray(w))
    np.testing.assert_allclose(np.moveaxis(np.asarray(y), -1, 1), want, atol=1e-5)
    y_ref, vjp_ref = jax.vjp(ops._conv_transpose_taps, jnp.asarray(x), jnp.asarray(w))
    dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    for got, ref in zip(vjp(dy), vjp_ref(dy)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(jnp.abs(ref).max()))
    if cpu.enabled():
        text = jax.jit(ops.conv_transpose_taps).lower(jnp.asarray(x), jnp.asarray(w)).compile().as_text()
        assert "convolution(" not in text  # the CPU's GEMM, not the dilated conv


@pytest.mark.parametrize("kernel, stride, padding", [
    ((3, 3, 3), (1, 1, 1), 1), ((1, 3, 3), (1, 2, 2), (0, 1, 1)), ((3, 3, 3), (2, 2, 2), 1),
    ((3, 1, 3), (1, 1, 1), (2, 0, 1))])
def test_conv3d_matches_torch_and_xla(kernel, stride, padding):
    """ops.conv3d (on CPU: 2-D convolutions of the depth slices, one per depth tap, where the
    depth stride is 1) against torch's Conv3d and XLA's 3-D conv, forward and gradients."""
    rng = np.random.default_rng(sum(kernel))
    x = rng.standard_normal((2, 7, 9, 8, 4)).astype(np.float32)
    w = rng.standard_normal((*kernel, 4, 5)).astype(np.float32)
    pads = (padding,) * 3 if isinstance(padding, int) else padding
    want = torch.nn.functional.conv3d(torch.from_numpy(np.moveaxis(x, -1, 1)),
                                      torch.from_numpy(np.ascontiguousarray(w.transpose(4, 3, 0, 1, 2))),
                                      stride=stride, padding=pads).numpy()
    pairs = tuple((p, p) for p in pads)
    y, vjp = jax.vjp(lambda x, w: ops.conv3d(x, w, stride, pairs), jnp.asarray(x), jnp.asarray(w))
    np.testing.assert_allclose(np.moveaxis(np.asarray(y), -1, 1), want, atol=1e-4)
    y_ref, vjp_ref = jax.vjp(lambda x, w: ops._conv3d(x, w, stride, pairs), jnp.asarray(x), jnp.asarray(w))
    dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    for got, ref in zip(vjp(dy), vjp_ref(dy)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(jnp.abs(ref).max()))
    if cpu.enabled():
        fn = jax.jit(lambda x, w: ops.conv3d(x, w, stride, pairs))
        text = fn.lower(jnp.asarray(x), jnp.asarray(w)).compile().as_text()
        assert ("dim_labels=b012f_012io" in text) == (stride[0] != 1)  # 3-D convs only for depth strides
