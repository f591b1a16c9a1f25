import sys

from unet_jax.cli.main import main

sys.exit(main())
