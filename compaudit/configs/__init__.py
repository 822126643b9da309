"""Every stage's settings, as dataclasses that import no torch.

An audit spec is parsed and validated into these (:mod:`compaudit.spec`) without
loading torch; the torch packages (:mod:`compaudit.models`, :mod:`compaudit.compress`,
:mod:`compaudit.dissection`) import them. One module per stage:

* :mod:`~compaudit.configs.compress`: each compression method's identity and config
  (:data:`~compaudit.configs.compress.METHODS`), and
  :mod:`~compaudit.configs.schedules`, the cubic sparsity schedule;
* :mod:`~compaudit.configs.train`: :class:`~compaudit.configs.train.TrainConfig`;
* :mod:`~compaudit.configs.head`: how outputs become probabilities (``[model].head``);
* :mod:`~compaudit.configs.dissection`: network dissection's settings.

The settings of the other stages live where their stage does, which imports no torch
either: the analysis options in :mod:`compaudit.analysis.audit`, the gate policy in
:mod:`compaudit.gate.policy`, the data, model, shift, predict and executor sections in
:mod:`compaudit.spec`. Every one is coerced from TOML by :mod:`compaudit.config`.
"""
