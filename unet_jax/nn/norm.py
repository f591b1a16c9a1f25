"""torch.nn.BatchNorm2d, NHWC, with torch's exact running-statistics update."""

import jax
import jax.numpy as jnp
from flax import nnx

BN_EPS = 1e-5
_AXES = (0, 1, 2)


def _affine(x, mean, var, gamma, beta):
    scale = gamma * jax.lax.rsqrt(var + BN_EPS)
    return x * scale + (beta - mean * scale)


@jax.custom_vjp
def batch_norm_train(x: jax.Array, gamma: jax.Array, beta: jax.Array):
    """Training-mode BatchNorm2d over (B, H, W): (y in x's dtype, batch mean, biased batch
    variance), computed and accumulated in `gamma`'s dtype (float32 for bfloat16 inputs)."""
    acc = gamma.dtype
    mean = jnp.mean(x, axis=_AXES, dtype=acc)
    var = jnp.mean(jnp.square(x.astype(acc) - mean), axis=_AXES)
    return _affine(x.astype(acc), mean, var, gamma, beta).astype(x.dtype), mean, var


def _batch_norm_train_fwd(x, gamma, beta):
    out = batch_norm_train(x, gamma, beta)
    # Residuals: x in its own dtype and the statistics, as cuDNN's BatchNorm keeps them;
    # autodiff would keep the float32 copy of a bfloat16 x (twice its memory).
    return out, (x, gamma, out[1], out[2])


def _batch_norm_train_bwd(residuals, cotangents):
    """The closed-form gradient: two reductions and one elementwise pass, in float32."""
    x, gamma, mean, var = residuals
    dy, dmean, dvar = cotangents
    acc = gamma.dtype
    dy = dy.astype(acc)
    n = x.size // x.shape[-1]
    rstd = jax.lax.rsqrt(var + BN_EPS)
    xhat = (x.astype(acc) - mean) * rstd
    dbeta = dy.sum(axis=_AXES)
    dgamma = (dy * xhat).sum(axis=_AXES)
    a = gamma * rstd
    dx = a * dy + (dmean - a * dbeta) / n + xhat * ((2 * dvar / rstd - a * dgamma) / n)
    return dx.astype(x.dtype), dgamma, dbeta


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nnx.Module):
    """torch.nn.BatchNorm2d(num_features) (eps 1e-5, momentum 0.1), NHWC.

    Training mode normalises with the biased batch variance and, like torch, updates
    `var` with the unbiased one and counts `num_batches_tracked`. Statistics are computed
    in float32 at least, whatever the compute dtype. Under `jax.jit` with the batch sharded
    over a mesh, the batch mean is global, so the statistics are synchronised.
    """

    def __init__(self, num_features: int, *, use_running_average: bool = False,
                 rngs: nnx.Rngs | None = None):
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))
        self.use_running_average = use_running_average

    def __call__(self, x: jax.Array) -> jax.Array:
        acc = jnp.promote_types(x.dtype, self.mean[...].dtype)
        gamma, beta = self.scale[...].astype(acc), self.bias[...].astype(acc)
        if self.use_running_average:
            mean, var = self.mean[...].astype(acc), self.var[...].astype(acc)
            return _affine(x.astype(acc), mean, var, gamma, beta).astype(x.dtype)
        y, mean, var = batch_norm_train(x, gamma, beta)
        n = x.size // x.shape[-1]
        unbiased = jax.lax.stop_gradient(var) * (n / max(n - 1, 1))
        mean = jax.lax.stop_gradient(mean)
        self.mean[...] = (0.9 * self.mean[...] + 0.1 * mean).astype(self.mean[...].dtype)
        self.var[...] = (0.9 * self.var[...] + 0.1 * unbiased).astype(self.var[...].dtype)
        self.num_batches_tracked[...] = self.num_batches_tracked[...] + 1
        return y
