"""The contracts between stages: self-describing directories of safetensors + JSON."""
