"""Sweep specs: the product of grid × runs × seeds, validated configs, stable run keys."""

from __future__ import annotations

import pytest

from llmsim.errors import ConfigError
from llmsim.sweep.spec import config_key, expand_runs, load_sweep_spec, spec_from_dict


def test_runs_are_the_product_of_grid_runs_and_seeds():
    spec = spec_from_dict({"grid": {"workload.burstiness": [1.0, 0.5], "scheduler.max_num_seqs": [8, 16, 32]},
                           "runs": [{"scheduler.block_size": 16}, {"scheduler.block_size": 32}],
                           "seeds": [0, 1, 2, 3]})
    runs = expand_runs(spec)
    assert len(runs) == 48
    assert len({r.key for r in runs}) == 48
    assert [r.index for r in runs] == list(range(48))
    first = runs[0]
    assert first.swept == {"workload.burstiness": 1.0, "scheduler.max_num_seqs": 8, "scheduler.block_size": 16}
    assert first.config.workload.burstiness == 1.0 and first.config.scheduler.max_num_seqs == 8
    assert [r.seed for r in runs[:4]] == [0, 1, 2, 3] and runs[0].config.seed == 0


def test_base_file_is_read_relative_to_the_spec(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 7\nworkload: {preset: poisson, num_requests: 10}\n")
    (tmp_path / "sweep.yaml").write_text("base: base.yaml\ngrid: {workload.rate: [1, 2]}\n")
    spec, root = load_sweep_spec(tmp_path / "sweep.yaml")
    runs = expand_runs(spec, root)
    assert [r.config.workload.rate for r in runs] == [1.0, 2.0]
    assert all(r.seed == 7 and r.config.workload.preset == "poisson" for r in runs)


def test_key_depends_on_the_whole_config_only():
    a = expand_runs(spec_from_dict({"grid": {"scheduler.max_num_seqs": [8]}}))[0]
    b = expand_runs(spec_from_dict({"runs": [{"scheduler.max_num_seqs": 8}]}))[0]
    c = expand_runs(spec_from_dict({"runs": [{"scheduler.max_num_seqs": 9}]}))[0]
    assert a.key == b.key == config_key(a.config)
    assert a.key != c.key


def test_unknown_spec_key_is_a_one_line_error(tmp_path):
    (tmp_path / "s.yaml").write_text("grids: {seed: [1]}\n")
    with pytest.raises(ConfigError, match=r"s.yaml: sweep field grids: unknown key"):
        load_sweep_spec(tmp_path / "s.yaml")


def test_bad_grid_path_names_the_run_and_field():
    with pytest.raises(ConfigError, match=r"scheduler.max_num_seq.*unknown key"):
        expand_runs(spec_from_dict({"grid": {"scheduler.max_num_seq": [8]}}))


def test_empty_grid_list_is_rejected():
    with pytest.raises(ConfigError, match="grid"):
        spec_from_dict({"grid": {"seed": []}})
