"""torch's align-corners sampling positions for 2x bilinear upsampling, shared by the plain
op and the CPU kernel."""

import jax.numpy as jnp
import numpy as np


def align_corners_weights(n_in: int, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each output's two source indices and the weight of the second, sampling at
    dst * (n_in-1) / (2 n_in-1) computed in `dtype` as torch does (float32 for float32 and
    bfloat16 inputs)."""
    n_out = 2 * n_in
    dtype = np.dtype(jnp.promote_types(dtype, jnp.float32))
    scale = dtype.type((n_in - 1) / (n_out - 1))
    src = np.arange(n_out).astype(dtype) * scale
    lo = np.floor(src).astype(np.int32)
    return lo, np.minimum(lo + 1, n_in - 1), src - lo
