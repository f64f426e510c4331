"""MkDocs hook for the docs build: puts the repository's result files into the site under their repository paths,
so a page links ``figures/medium/table2.md`` or ``benchmarks/results/modes.md`` and the reader gets the file as it
is committed (numbers live in those files; the pages link them rather than copy them).

Loaded by mkdocs.yml (``hooks``); not part of the library.
"""
from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

# Repository files (globs from the repository root) served as they are: the rendered tables and figures, the
# benchmark results, the proofs' and the notebooks' maps.
MOUNTS = ("figures/*.md", "figures/*.png", "figures/*/*.md", "figures/*/*.png", "benchmarks/results/*.md",
          "proofs/README.md", "notebooks/README.md")


def on_files(files, config):
    root = Path(config.config_file_path).resolve().parent
    for pattern in MOUNTS:
        for path in sorted(root.glob(pattern)):
            files.append(File(path.relative_to(root).as_posix(), src_dir=str(root), dest_dir=config.site_dir,
                              use_directory_urls=config.use_directory_urls))
    return files
