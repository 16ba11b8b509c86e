"""The canonical Workload table and its invariants."""

from __future__ import annotations

import pandas as pd
import pytest

from llmsim.workload.workload import Workload, canonical_frame


def frame(**overrides):
    cols = {"arrival_s": [0.0, 1.0, 1.0], "prompt_tokens": [5, 6, 7], "output_tokens": [1, 2, 3]}
    cols.update(overrides)
    return canonical_frame(cols)


def test_valid_workload_with_ties_and_optionals():
    w = Workload(frame(failed=[False, True, False], model=["a", "a", "b"]), "x").validate()
    assert len(w) == 3 and w.duration_s == 1.0 and w.has_failures and list(w.head(2)["prompt_tokens"]) == [5, 6]


@pytest.mark.parametrize("df, message", [
    (frame(arrival_s=[0.0, 2.0, 1.0]), "goes backwards"),
    (frame(prompt_tokens=[1, -1, 2]), "negative"),
    (pd.DataFrame({"arrival_s": [0.0], "prompt_tokens": [1]}), "missing column 'output_tokens'"),
    (frame().assign(extra=1), "unknown columns"),
])
def test_invalid_frames_are_rejected(df, message):
    with pytest.raises(ValueError, match=message):
        Workload(df, "x").validate()
