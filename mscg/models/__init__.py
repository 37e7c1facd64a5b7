"""Pure nn.Modules and their config dataclasses: SASRec, quantizers, the generator."""
