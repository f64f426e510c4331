"""The paper's harness, beside the library: the tables' data sets (:mod:`chg.experiments.data`), models
(:mod:`chg.experiments.models`), the selection training pipeline of Tables 2–3 (:mod:`chg.experiments.train`), the
detection table's protocol (:mod:`chg.experiments.detection`) and where run records and figures live
(:mod:`chg.experiments.results`). The library (everything else under ``chg``) never imports it
(``tests/test_imports.py``); the repository's ``reproduce/`` scripts do.
"""
