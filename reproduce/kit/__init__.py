"""The reproduce toolkit: the one library every script in reproduce/ uses (no script imports another script).

* :mod:`kit.config` — presets (frozen dataclasses, one per scale) and ``--set key=value`` parsed by field type;
* :mod:`kit.cli` — the shared command line (``--scale --set --show --shard --replace --render-only --no-render``);
* :mod:`kit.grid` — the one "already done?" rule, shards, and the loop that runs and records each run;
* :mod:`kit.tables` — the one Markdown/LaTeX table writer; :mod:`kit.style` — the one plotting style;
* :mod:`kit.selection` — Tables 2–3 (grid, presets, render); :mod:`kit.detect` — the detection table;
* :mod:`kit.odv` — Table 1 and Figures 1–2 (OpenDataVal): the grid, records and command line, with its parts
  :mod:`kit.odv_presets`, :mod:`kit.odv_data`, :mod:`kit.odv_run` and :mod:`kit.odv_text`.

Paths and the atomic writer come from :mod:`chg.experiments.results`.
"""
