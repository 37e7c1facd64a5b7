"""`python -m mscg` (and `torchrun -m mscg ...`)."""

from mscg.cli import main

main()
