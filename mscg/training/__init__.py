"""Training: the shared loop (events, resume checkpoints, DDP) and one fit per trained stage."""
