"""JAX vs torch benchmark (same as `unet-jax bench`): python scripts/bench.py --help"""

import argparse
import sys

from unet_jax.cli.bench import add_flags
from unet_jax.parity.bench import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_flags(parser)
    sys.exit(main(parser.parse_args()))
