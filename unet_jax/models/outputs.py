"""What every model's output means, stated once: a list is deep supervision (the last head
is the prediction); one channel is a binary logit (sigmoid), more are class logits (softmax).
Used by training, prediction, evaluation and the benches alike."""

import jax
import jax.numpy as jnp


def heads(out) -> list:
    """Every head of an output: the list of deep supervision, or the one output."""
    return list(out) if isinstance(out, list | tuple) else [out]


def last_head(out):
    """The prediction of an output: the last head of deep supervision, or the output."""
    return heads(out)[-1]


def probabilities(logits: jax.Array) -> jax.Array:
    """Class probabilities in float32, (..., classes): softmax, or for one channel the
    sigmoid as two classes [1 - p, p]."""
    logits = logits.astype(jnp.float32)
    if logits.shape[-1] == 1:
        p = jax.nn.sigmoid(logits)
        return jnp.concatenate([1 - p, p], -1)
    return jax.nn.softmax(logits, -1)


def classes(logits: jax.Array) -> jax.Array:
    """Class ids: argmax over channels, or sigmoid > 0.5 (a positive logit) for one channel."""
    return (logits[..., 0] > 0).astype(jnp.int32) if logits.shape[-1] == 1 else logits.argmax(-1)
