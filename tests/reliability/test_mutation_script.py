"""experiments/mutation_test.py names each mutant by a piece of source text; a refactor that rewords that text leaves
the mutant unable to run (the script stops there), which only the slow docs check would notice, and only for the
mutant it runs. Here every mutant's text must still be in its file, once or (replaced first) where intended."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _mutations():
    spec = importlib.util.spec_from_file_location("mutation_test", ROOT / "experiments" / "mutation_test.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation_test"] = module  # (its dataclass looks its module up by name)
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["mutation_test"]
    return module.MUTATIONS


@pytest.mark.parametrize("mutation", _mutations(), ids=lambda m: m.id)
def test_every_mutants_source_text_is_still_in_its_file(mutation) -> None:
    source = (ROOT / mutation.file).read_text()
    assert mutation.old in source, f"{mutation.id}: its text is no longer in {mutation.file}"
    assert mutation.new != mutation.old
