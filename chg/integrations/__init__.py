"""CHG Shapley values ridden along where practitioners already train (docs/trainers.md).

* :mod:`chg.integrations.huggingface`: ``CHGCallback``, a ``transformers.TrainerCallback`` for ``Trainer.train()``.
* :mod:`chg.integrations.lightning`: ``CHGCallback``, a ``lightning.pytorch.Callback`` for ``Trainer.fit()``.
* :mod:`chg.integrations.rows`: what both share, with no optional dependency — the row index a data set carries
  (:class:`~chg.integrations.rows.IndexedRows`), the valuer's settings and the one-time check of the training loss.

Each training forward pass's logits and output-layer features go to :meth:`chg.EpochValuer.add_logits` (ride-along,
no extra pass) and every epoch ends with :meth:`chg.EpochValuer.end_epoch`; ``callback.values`` is a
:class:`chg.Values`. The submodules import their framework, so this package imports none of them: ``from
chg.integrations.huggingface import CHGCallback`` needs ``transformers`` (and ``accelerate``), the Lightning one
``pip install chg-shapley[lightning]``.
"""
__all__: list = []
