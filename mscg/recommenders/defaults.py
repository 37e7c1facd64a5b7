"""Inference defaults, free of torch (so `mscg CMD --help` is quick): each stated once, here."""

DEFAULT_BEAM_SIZE = 20  # a generator's beam: `train --beam-size` (validation), and evaluate's and recommend's default
EVAL_BATCH_SIZE = 256  # histories ranked at once by evaluate, fuse, recommend, serve and mscg.load(...)
FUSE_CANDIDATES = 50  # `mscg fuse`: each dense scorer's best items added to the generator's beam
# Leaving the history's items out of a ranking: recommending excludes them (a user has seen them), evaluating
# does not (the published leave-one-out protocol ranks every item; `evaluate --exclude-history` to compare).
EXCLUDE_HISTORY_RECOMMENDING = True  # recommend, serve, mscg.load(...).recommend
EXCLUDE_HISTORY_EVALUATING = False  # evaluate, fuse, validation in training
