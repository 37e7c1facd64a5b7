"""The prefix tree of valid item codes and constrained beam search over it."""
