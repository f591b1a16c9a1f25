"""torch <-> Flax conversion: key maps (keymap), the engine, file reading (io), the API."""
