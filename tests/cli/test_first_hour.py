"""The frictions a new user meets in the first hour: each explained in one line, or gone."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

import llmsim
from llmsim.cli import main
from llmsim.errors import UserError, did_you_mean
from llmsim.metrics.display import plural

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--set", "workload.num_requests=20", "-q"]


def _error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    return err


def test_set_without_equals_is_explained_not_taken_for_a_config_file(capsys) -> None:
    err = _error(capsys, "run", "--set", "scheduler.max_num_seqs", "64")
    assert "PATH=VALUE joined by '='" in err and "not found" not in err


@pytest.mark.parametrize("override, suggestion", [
    ("scheduler.max_num_seq=64", "did you mean 'max_num_seqs'?"),
    ("schedulr.policy=orca", "did you mean 'scheduler'?"),
    ("scheduler.policy=vllm_v1", "did you mean 'vllm-v1'?"),
    ("cluster.router=least_kv", "did you mean 'least-kv'?"),
    ("hardware.gpu=A10", "did you mean 'A10G'?"),
    ("hardware.model=llama-2-7", "did you mean 'Llama-2-7B'?"),
])
def test_misspelt_keys_and_names_get_a_suggestion(capsys, override: str, suggestion: str) -> None:
    assert suggestion in _error(capsys, "run", "--set", override, *SMALL)


def test_no_suggestion_for_a_name_far_from_every_choice() -> None:
    assert did_you_mean("magic", ["vllm-v1", "orca", "sarathi"]) == ""


def test_simulate_takes_a_config_path_or_says_what_it_wants(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("workload: {num_requests: 20}\n")
    assert llmsim.simulate(str(config)).summary["num_requests"] == 20
    assert llmsim.simulate(config).summary["num_requests"] == 20
    with pytest.raises(UserError, match="expects a SimConfig"):
        llmsim.simulate({"workload": {}})


def test_added_profiles_go_to_the_user_folder_and_are_found_first(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LLMSIM_PROFILES_DIR", str(tmp_path / "profiles"))
    assert main(["profiles", "add-model", str(REPO / "examples" / "tinyllama_config.json"), "--name", "Tiny"]) in (0, None)
    assert (tmp_path / "profiles" / "models" / "Tiny.yaml").is_file()
    capsys.readouterr()
    assert main(["run", "--set", "hardware.model=tiny", "--plain", *SMALL]) == 0
    assert "Tiny on A100-80GB" in capsys.readouterr().out
    assert main(["profiles", "list"]) in (0, None)
    assert "  Tiny" in capsys.readouterr().out


def test_gpu_aliases_are_listed_and_named_in_the_summary(capsys) -> None:
    assert main(["profiles", "list"]) in (0, None)
    assert "A100-80GB  (aliases: A100," in capsys.readouterr().out
    assert main(["run", "--set", "hardware.gpu=A100", "--plain", *SMALL]) == 0
    assert "Llama-2-7B on A100-80GB (alias A100)" in capsys.readouterr().out


def test_plain_summary_is_csv_and_a_piped_table_does_not_wrap(capsys) -> None:
    assert main(["run", "--plain", *SMALL]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["metric", "value"] and all(len(row) == 2 for row in rows)
    assert main(["run", *SMALL]) == 0  # captured stdout is not a terminal: one line per metric
    out = capsys.readouterr().out
    assert sum("requests (completed / rejected / failed)" in line for line in out.splitlines()) == 1
    assert not any(line.strip().startswith("│ failed)") for line in out.splitlines())


def test_plurals() -> None:
    assert plural(1, "replica") == "1 replica" and plural(2, "replica") == "2 replicas"
    assert plural(1000, "request") == "1,000 requests"


def test_examples_copy_gives_the_files_the_docs_use(tmp_path: Path, capsys) -> None:
    assert main(["examples", "copy", str(tmp_path / "ex")]) in (0, None)
    names = {p.name for p in (tmp_path / "ex").iterdir()}
    assert {"config.yaml", "trace.csv", "bad.csv", "sweep.yaml", "cluster_autoscale.yaml"} <= names
    capsys.readouterr()
    assert "already holds" in _error(capsys, "examples", "copy", str(tmp_path / "ex"))
    assert main(["run", str(tmp_path / "ex" / "config.yaml"), *SMALL, "--plain"]) == 0
