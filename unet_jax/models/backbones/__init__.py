"""Encoders shared by several archs."""
