"""Saved models and training workdirs: written and read here (one format each), the
workdir lock, and `sources`, which tells every model source apart."""
