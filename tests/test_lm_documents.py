"""reproduce/lm_documents.py and its protocol (chg.experiments.lm_documents): the corpus and the corruptions are what
they say, the smoke preset runs end to end (records, resume, render from records only), and
benchmarks/bench_sequence.py runs in its quick mode."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import chg.experiments.results as results

pytest.importorskip("transformers")

from chg.experiments.lm_documents import (LMDocConfig, agreement, corrupt_documents, encode,  # noqa: E402
                                          stdlib_docstrings)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "reproduce"))
from kit import lm  # noqa: E402

SMALL = LMDocConfig(docs=60, corrupt_each=5, valid_docs=12, seq_len=48)


def test_corpus_is_the_standard_library_docstrings_deterministically():
    docs, sha = stdlib_docstrings(64)
    assert len(docs) > 1000 and len(set(docs)) == len(docs)
    assert all(d.isascii() and len(d) >= 64 and "  " not in d for d in docs)
    assert stdlib_docstrings.__wrapped__(64) == (docs, sha)  # read again, uncached: the same


def test_the_corruptions_are_what_they_say():
    texts, kinds, source, valid, info = corrupt_documents(SMALL)
    corpus, _ = stdlib_docstrings(SMALL.min_chars)
    assert (texts, kinds, source, valid) == corrupt_documents(SMALL)[:4]  # seeded
    assert corrupt_documents(LMDocConfig(**{**SMALL.__dict__, "seed": 1}))[0] != texts
    kinds = np.asarray(kinds)
    assert len(texts) == 60 and {k: int((kinds == k).sum()) for k in lm.KINDS} == \
        {"clean": 45, "shuffled": 5, "script": 5, "duplicate": 5}
    clean_texts = {t for t, k in zip(texts, kinds) if k == "clean"}
    for t, k, s in zip(texts, kinds, source):
        if k == "clean":
            assert t == corpus[s]
        elif k == "shuffled":
            assert sorted(t.split(" ")) == sorted(corpus[s].split(" "))
        elif k == "script":
            assert not t.isascii() and any("а" <= ch <= "я" for ch in t) and not any("a" <= ch <= "z" for ch in t)
            assert len(t) == len(corpus[s])
        else:
            assert t in clean_texts and t == corpus[s]
    assert not set(valid) & set(texts)  # validation documents are held out
    assert info["corpus_docs"] == len(corpus)


def test_encode_is_byte_level_with_masked_padding():
    (short, long_) = encode(["abc", "x" * 100], 8)
    assert short["input_ids"].tolist() == [97, 98, 99, 0, 0, 0, 0, 0]
    assert short["attention_mask"].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert short["labels"].tolist() == [97, 98, 99, -100, -100, -100, -100, -100]
    assert long_["attention_mask"].sum() == 8 and bool((long_["input_ids"] == 120).all())
    (cyr,) = encode(["б"], 4)
    assert cyr["input_ids"][:2].tolist() == list("б".encode()) and int(cyr["attention_mask"].sum()) == 2


def test_agreement():
    a = np.arange(20.0)
    assert agreement(a, a) == {"spearman": 1.0, "low_overlap": 1.0, "high_overlap": 1.0}
    r = agreement(a, -a)
    assert r["spearman"] == -1.0 and r["low_overlap"] == 0.0 and r["high_overlap"] == 0.0


def test_smoke_preset_runs_resumes_and_renders_from_records(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(results, "FIGURES_DIR", tmp_path / "figures")
    assert lm.main(["--scale", "smoke", "--threads", "1"]) == 0
    (record,) = results.load_runs("lm_documents", "smoke")
    m = record["metrics"]
    assert set(m["metrics"]) == set(lm.METHODS) and len(m["kinds"]) == 60
    for method, s in m["scores"].items():
        assert len(s) == 60 and np.isfinite(s).all(), method
        assert 0.0 <= m["metrics"][method]["roc_auc"] <= 1.0
    assert len(m["agreement"]["per_epoch"]) == 1  # smoke: 2 epochs, ride-along from the second
    md = results.figure_path("smoke", "lm_documents.md").read_text()
    assert "Verdict" in md and "CHG Shapley (exact, two sweeps)" in md
    png = results.figure_path("smoke", "lm_documents.png").read_bytes()
    assert lm.main(["--scale", "smoke"]) == 0  # already done: skipped, then rendered again
    assert results.figure_path("smoke", "lm_documents.md").read_text() == md
    assert results.figure_path("smoke", "lm_documents.png").read_bytes() == png  # deterministic render


def test_bench_sequence_quick_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_sequence.py"), "--quick", "--threads", "1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    text = (tmp_path / "sequence_quick.md").read_text()
    assert "two sweeps" in text and "ride-along" in text and (tmp_path / "sequence_quick.json").is_file()

