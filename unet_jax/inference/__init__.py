"""Prediction (any image size, sliding windows), evaluation, and the class palette."""
