"""Training stage: LIF neurons, the model registry, BKD distillation and `python -m train.bkd`."""
