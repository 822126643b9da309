"""Every stage's settings, as dataclasses that import no torch.

An audit spec is parsed and validated into these (:mod:`compaudit.spec`) without
loading torch; the torch packages (:mod:`compaudit.models`, :mod:`compaudit.compress`,
:mod:`compaudit.dissection`) import them. One module per stage:

* :mod:`~compaudit.configs.methods`: each compression method's identity and the registry
  (:data:`~compaudit.configs.methods.METHODS`); the configs in
  :mod:`~compaudit.configs.pruning`, :mod:`~compaudit.configs.quantization` and
  :mod:`~compaudit.configs.compress` (``load``, ``constrained_finetune``, and the one
  place to import any config from), and :mod:`~compaudit.configs.schedules`, the cubic
  sparsity schedule;
* :mod:`~compaudit.configs.train`: :class:`~compaudit.configs.train.TrainConfig`;
* :mod:`~compaudit.configs.head`: how outputs become probabilities (``[model].head``);
* :mod:`~compaudit.configs.dissection`: network dissection's settings.

The settings of the other stages live where their stage does, which imports no torch
either: the analysis options in :mod:`compaudit.analysis.audit`, the gate policy in
:mod:`compaudit.gate.policy`, the data, model, shift, predict and executor sections in
:mod:`compaudit.spec`. Every one is coerced from TOML by :mod:`compaudit.config`.
"""

# Every config class registers its method on import: importing any configs module imports
# them all, so METHODS is complete whichever module a caller imports first.
from compaudit.configs import compress as _compress  # noqa: E402, F401
