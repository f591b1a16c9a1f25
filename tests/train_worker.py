"""Run `unet_jax.train.train` in a fresh process (device count, distributed setup) and save
the final parameters: python tests/train_worker.py CONFIG_JSON OUT.npz"""

import json
import sys

import jax
import numpy as np
from flax import nnx

from unet_jax.train import TrainConfig, train
from unet_jax.train.setup import to_host

if __name__ == "__main__":
    cfg = TrainConfig(**json.loads(sys.argv[1]))
    summary = train(cfg)
    state = nnx.state(summary.pop("model"))
    flat = {".".join(map(str, path)): to_host(v.get_value()) for path, v in state.flat_state()}
    np.savez(sys.argv[2], **flat)
    summary["devices"] = jax.device_count()
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, list)}))
