"""The fitted profiles predict the shared Vidur measurements (and models they were not fitted on)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from llmsim.errors import UserError
from llmsim.hardware import calibration as cal
from llmsim.hardware.cli import calibrate_app, profiles_app
from llmsim.hardware.profiles import load_gpu, profiles_dir
from tests.conftest import shared_path

MLP_FILES = [
    ("A100-80GB", "compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv"),
    ("A100-80GB", "compute/a100/meta-llama/Meta-Llama-3-70B/mlp.csv"),
    ("A100-80GB", "compute/a100/microsoft/phi-2/mlp.csv"),
    ("H100-80GB", "compute/h100/Qwen/Qwen-72B/mlp.csv"),
    ("H100-80GB", "compute/h100/microsoft/phi-2/mlp.csv"),
    ("A40", "compute/a40/codellama/CodeLlama-34b-Instruct-hf/mlp.csv"),
    ("A30", "a30_fork/compute/a30/meta-llama/Llama-2-7b-hf/mlp.csv"),
]


@pytest.mark.parametrize("gpu, rel", MLP_FILES)
def test_per_layer_mape_within_ten_percent(gpu, rel):
    result = cal.check_mlp(shared_path("vidur_profiling", *rel.split("/")), load_gpu(gpu))
    assert result["mape_layer"] <= 0.10
    assert set(result["mape_by_op"]) == {"projections", "mlp", "elementwise"}


@pytest.mark.slow
def test_leave_one_model_out_still_within_ten_percent():
    held = shared_path("vidur_profiling", "compute", "h100", "microsoft", "phi-2", "mlp.csv")
    others = [p for p in held.parents[2].glob("*/*/mlp.csv") if p != held]
    gpu = load_gpu("H100")
    eff = cal.fit_mlp(others, gpu)
    assert cal.check_mlp(held, dataclasses.replace(gpu, efficiency=eff))["mape_layer"] <= 0.10


@pytest.mark.parametrize(
    "gpu, setup",
    [("A100-80GB", "a100_dgx"), ("H100-80GB", "h100_dgx"), ("A100-80GB-PCIe", "a100_pairwise_nvlink"), ("H100-NVL", "h100_pairwise_nvlink")],
)
def test_all_reduce_within_fifteen_percent_over_every_row(gpu, setup):
    result = cal.check_collective(shared_path("vidur_profiling", "network", setup, "all_reduce.csv"), load_gpu(gpu))
    assert result["mape_collective"] <= 0.15 and result["mape_intra_node"] <= 0.15


def test_cross_node_all_reduce_and_send_recv_within_fifteen_percent():
    a100 = load_gpu("A100-80GB")
    all_reduce = cal.check_collective(shared_path("vidur_profiling", "network", "a100_dgx", "all_reduce.csv"), a100)
    assert all_reduce["mape_inter_node"] <= 0.18 and all_reduce["mape_collective"] <= 0.15
    pairwise = cal.check_collective(shared_path("vidur_profiling", "network", "a100_pairwise_nvlink", "send_recv.csv"), load_gpu("A100-80GB-PCIe"))
    assert pairwise["mape_inter_node"] <= 0.15 and pairwise["mape_collective"] <= 0.15


def test_attention_fit_on_a30():
    path = shared_path("vidur_profiling", "a30_fork", "compute", "a30", "Qwen", "Qwen-2-7B", "attention.csv")
    result = cal.check_attention(path, load_gpu("A30"))
    assert result["mape_attention"] <= 0.10 and result["mape_decode"] <= 0.10 and result["mape_prefill"] <= 0.15


def test_calibrate_check_cli_writes_json(tmp_path):
    path = shared_path("vidur_profiling", "compute", "a40", "microsoft", "phi-2", "mlp.csv")
    out = tmp_path / "r.json"
    run = CliRunner().invoke(calibrate_app, ["check", str(path), "--gpu", "A40", "--json", str(out)])
    assert run.exit_code == 0, run.output
    data = json.loads(out.read_text())
    assert 0 < data["mape_layer"] <= 0.10 and "mlp" in data["mape_by_op"]
    assert "per-layer MAPE" in run.output


def test_bad_measurement_file_names_missing_column(tmp_path):
    path = tmp_path / "mlp.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="mlp.csv: column 'n_head' is missing"):
        cal.check_mlp(path, load_gpu("A100"))


def test_profiles_list_and_show():
    runner = CliRunner()
    listing = runner.invoke(profiles_app, ["list"])
    assert "H100-80GB" in listing.output and "Mixtral-8x7B" in listing.output
    shown = runner.invoke(profiles_app, ["show", "Mixtral-8x7B"])
    assert "46.70B" in shown.output and "KV cache: 128.0 KiB per token" in shown.output


def test_profiles_add_model_from_config_json(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMSIM_PROFILES_DIR", str(tmp_path / "user"))  # added profiles go to the per-user folder
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512, "vocab_size": 1000}))
    name = "zz-test-tiny-model"
    run = CliRunner().invoke(profiles_app, ["add-model", str(config), "--name", name])
    assert run.exit_code == 0, run.output
    assert (tmp_path / "user" / "models" / f"{name}.yaml").is_file()
    assert not (profiles_dir() / "models" / f"{name}.yaml").exists()  # the installed package is left alone
    from llmsim.hardware.profiles import load_model

    assert load_model(name).hidden_size == 256


def test_llmsim_calibrate_check_through_the_main_cli(tmp_path, capsys):
    from llmsim.cli import main

    path = shared_path("vidur_profiling", "network", "h100_dgx", "all_reduce.csv")
    out = tmp_path / "c.json"
    assert main(["calibrate", "check", "--gpu", "H100", "--collective", str(path), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert 0 < data["mape_collective"] <= 0.15 and data["gpu"] == "H100-80GB"
    assert main(["calibrate", "check", "--gpu", "H100"]) == 2  # nothing to check: one-line user error
    assert "calibrate check: give" in capsys.readouterr().err


def test_calibrate_fit_on_a_subset_writes_the_profile(tmp_path):
    mlp = shared_path("vidur_profiling", "compute", "a40", "microsoft", "phi-2", "mlp.csv")
    send = shared_path("vidur_profiling", "network", "a40_pairwise_nvlink", "send_recv.csv")
    small = tmp_path / "mlp.csv"
    frame = pd.read_csv(mlp)
    frame[frame["num_tensor_parallel_workers"] == 1].to_csv(small, index=False)
    gpu_yaml = tmp_path / "my-a40.yaml"
    gpu_yaml.write_text(Path(load_gpu("A40").source_file).read_text().replace("name: A40", "name: my-a40", 1).replace("aliases: [", "aliases: [zz-", 1))
    run = CliRunner().invoke(calibrate_app, ["fit", "--gpu", str(gpu_yaml), "--mlp", str(small), "--send-recv", str(send), "--write"])
    assert run.exit_code == 0, run.output
    written = yaml.safe_load(gpu_yaml.read_text())
    eff = written["efficiency"]
    assert "mlp.csv" in eff["fitted_on"] and "send_recv" in eff["fitted_on"]
    assert 0.05 <= eff["linear_mfu"] <= 1 and eff["linear_overhead_us"] >= 0
    assert written["sources"]["hbm_bandwidth_gbps"]  # the rest of the profile is kept
    refit = load_gpu(str(gpu_yaml))
    assert cal.check_mlp(small, refit)["mape_layer"] <= 0.10
    assert refit.efficiency.network_send_recv_efficiency == pytest.approx(eff["network_send_recv_efficiency"])
