"""The shared training loop, distributed (torchrun + DDP) helpers, and resume checkpoints."""
