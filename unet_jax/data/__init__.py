"""Datasets, layouts, image files, augmentation and the grain input pipeline."""
