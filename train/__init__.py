"""Training stage: ``python -m train.bkd`` trains an ANN teacher and a spiking student distilled from it.

- :mod:`train.bkd`: the command (config, training loop, model selection, distributed runs).
- :mod:`train.neuron`: the LIF neuron (float semantics, surrogate gradient) and the LI readout.
- :mod:`train.models`: the model registry (students and their ANN teachers).
- :mod:`train.distill`: BKD (blurred feature distillation), feature MSE and WSLD.
- :mod:`train.quant`: the weight quantiser shared by quantisation-aware training and conversion.
- :mod:`train.augment`: event augmentation applied to teacher and student alike.
- :mod:`train.data`: in-memory datasets, validation carve-outs, extra and transfer sets.
- :mod:`train.checkpoint`: checkpoints as plain data (``torch.load(weights_only=True)``), sealed with a
  SHA-256 of their contents.

It imports :mod:`core` and :mod:`inputs`, never ``convert``, ``runtime`` or ``targets``.
"""
