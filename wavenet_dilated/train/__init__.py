"""Training: the trainer, its config and state, the fused loss and the distributed helpers."""
