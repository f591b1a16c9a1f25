"""Platform-specific algorithms chosen below `unet_jax.ops`; today only the CPU's."""
