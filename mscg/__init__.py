"""mscg: multimodal generative recommendation (MSCGRec) as composable command-line stages."""

__version__ = "0.1.0"
