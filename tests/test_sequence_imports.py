"""chg.sequence stays the module to import after its split into chg.sequence_maths, chg.sequence_valuation and
chg.sequence_loop: every name it exported before (its old ``__all__``, listed here by hand, and its public constants)
is importable from it and is the very object its new module defines."""
import importlib

import pytest

OLD_ALL = ["IGNORE_INDEX", "UNITS", "REDUCTIONS", "SequenceBatch", "causal_shift", "sequence_batch", "sequence_loss",
           "sequence_stats", "sequence_dots", "sequence_values", "sequence_shapley", "token_factors",
           "SequenceValuer", "value_sequences", "is_sequence_data", "sequence_valuer"]
OLD_CONSTANTS = ["UTILITIES", "ALPHAS", "MODES", "VOCAB_CHUNK_ELEMENTS"]  # public, not in __all__
HOME = {"SequenceValuer": "chg.sequence_valuation", "value_sequences": "chg.sequence_loop",
        "is_sequence_data": "chg.sequence_loop", "sequence_valuer": "chg.sequence_loop"}  # the rest: sequence_maths


@pytest.mark.parametrize("name", OLD_ALL + OLD_CONSTANTS)
def test_old_name_is_importable_from_chg_sequence(name):
    namespace = {}
    exec(f"from chg.sequence import {name}", namespace)  # the import statement users write
    home = importlib.import_module(HOME.get(name, "chg.sequence_maths"))
    assert namespace[name] is getattr(home, name)


def test_star_import_and_all_are_unchanged():
    import chg.sequence
    assert chg.sequence.__all__ == OLD_ALL
    namespace = {}
    exec("from chg.sequence import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(OLD_ALL)


def test_values_of_the_constants_are_unchanged():
    from chg import sequence
    assert sequence.IGNORE_INDEX == -100 and sequence.UNITS == ("sequence", "token")
    assert sequence.REDUCTIONS == ("mean", "sum") and sequence.UTILITIES == ("chg", "gradient")
    assert sequence.ALPHAS == ("train", "valid") and sequence.MODES == ("pass", "ride")
    assert sequence.VOCAB_CHUNK_ELEMENTS == 1 << 19


def test_the_routes_in_use_the_same_objects():
    """chg.loop (value_data) and chg.EpochValuer(unit=...) reach the objects chg.sequence exports."""
    import chg
    import chg.loop
    import chg.sequence
    assert chg.loop.value_sequences is chg.sequence.value_sequences
    assert chg.loop.is_sequence_data is chg.sequence.is_sequence_data
    assert type(chg.EpochValuer(3, unit="sequence")) is chg.sequence.SequenceValuer
