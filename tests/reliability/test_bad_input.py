"""The README's promise for bad input, checked over the whole corpus (``tests/reliability/corpus.py``):
non-zero exit, no traceback, one line naming the file / row / field / flag, no output left behind, no hang."""

from __future__ import annotations

import pytest

from tests.reliability.corpus import CASES
from tests.reliability.harness import problems, run_case


def test_corpus_is_large_and_covers_every_command():
    commands = {case.argv[0] for case in CASES}
    assert len(CASES) >= 150
    assert {"run", "config", "analyze", "generate", "plan", "sweep", "report", "replay-scheduler", "calibrate",
            "profiles", "bench"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_clear_line(case, tmp_path):
    outcome = run_case(case, tmp_path / "case")
    assert not problems(case, outcome), (problems(case, outcome), outcome.stderr[-2000:], outcome.crash)
