"""Profiles load by name, alias or path; bad input gives one line naming the file/field."""

from __future__ import annotations

import json

import pytest

from llmsim.errors import ProfileError
from llmsim.hardware.profiles import list_gpus, list_models, load_gpu, load_model, profiles_dir

REQUIRED_GPUS = ["A100-40GB", "A100-80GB", "H100-80GB", "H200", "L40S", "A10G", "A40", "L4", "B200", "MI300X", "A30"]
REQUIRED_MODELS = ["Llama-2-7B", "Llama-2-13B", "Llama-2-70B", "Llama-3-8B", "Llama-3-70B", "Mistral-7B", "Qwen2.5-7B"]
DATASHEET_FIELDS = [
    "peak_bf16_tflops",
    "memory_gib",
    "hbm_bandwidth_gbps",
    "interconnect_bandwidth_gbps",
    "pcie_bandwidth_gbps",
    "cost_per_hour_usd",
]


def test_every_required_profile_is_bundled():
    assert set(REQUIRED_GPUS) <= set(list_gpus())
    assert set(REQUIRED_MODELS) <= set(list_models())


@pytest.mark.parametrize("name", REQUIRED_GPUS)
def test_every_datasheet_number_has_a_source(name):
    import yaml

    path = next(p for p in (profiles_dir() / "gpus").glob("*.yaml") if yaml.safe_load(p.read_text())["name"] == name)
    sources = yaml.safe_load(path.read_text())["sources"]
    assert [f for f in DATASHEET_FIELDS if f not in sources] == []


def test_h100_alias_and_case_insensitive_names():
    assert load_gpu("H100").name == "H100-80GB"
    assert load_gpu("h100-80gb").name == "H100-80GB"
    assert load_model("meta-llama/Llama-2-7b-hf").name == "Llama-2-7B"


def test_unknown_gpu_error_lists_valid_names():
    with pytest.raises(ProfileError) as info:
        load_gpu("Z100")
    message = str(info.value)
    assert "hardware.gpu" in message and "'Z100'" in message
    assert "A100-80GB" in message and "H100-80GB" in message
    assert "\n" not in message


def test_unknown_model_error_lists_valid_names():
    with pytest.raises(ProfileError, match="Llama-2-7B.*Qwen2.5-7B"):
        load_model("Llama-9-1B")


def test_gpu_from_user_yaml_path(tmp_path):
    path = tmp_path / "my_gpu.yaml"
    path.write_text(
        "name: MyGPU\npeak_bf16_tflops: 100\nmemory_gib: 32\nhbm_bandwidth_gbps: 1000\n"
        "interconnect_bandwidth_gbps: 50\npcie_bandwidth_gbps: 32\ncost_per_hour_usd: 1.5\n"
    )
    gpu = load_gpu(str(path))
    assert gpu.name == "MyGPU"
    assert gpu.peak_flops == pytest.approx(100e12)
    assert gpu.memory_bytes == pytest.approx(32 * 1024**3)


def test_bad_gpu_field_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: Bad\npeak_bf16_tflops: -1\nmemory_gib: 32\nhbm_bandwidth_gbps: 1000\n"
        "interconnect_bandwidth_gbps: 50\npcie_bandwidth_gbps: 32\ncost_per_hour_usd: 1\n"
    )
    with pytest.raises(ProfileError) as info:
        load_gpu(str(path))
    assert str(path) in str(info.value) and "peak_bf16_tflops" in str(info.value)


def test_typo_in_gpu_yaml_is_rejected(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(
        "name: T\npeak_bf16_tflops: 1\nmemory_gib: 32\nhbm_bandwidth_gbps: 1000\nhbm_bandwith_gbps: 1\n"
        "interconnect_bandwidth_gbps: 50\npcie_bandwidth_gbps: 32\ncost_per_hour_usd: 1\n"
    )
    with pytest.raises(ProfileError, match="hbm_bandwith_gbps"):
        load_gpu(str(path))


def test_model_from_hugging_face_config_json(tmp_path):
    folder = tmp_path / "TinyLlama"
    folder.mkdir()
    config = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 2048,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "intermediate_size": 5632,
        "vocab_size": 32000,
        "torch_dtype": "bfloat16",
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
    }
    (folder / "config.json").write_text(json.dumps(config))
    model = load_model(str(folder / "config.json"))
    assert model.name == "TinyLlama"
    assert model.head_dim == 64
    # TinyLlama-1.1B: 1,100,048,384 parameters (its model card's count)
    assert model.num_params == 1_100_048_384
    assert model.kv_bytes_per_token() == 2 * 22 * 4 * 64 * 2


def test_model_config_missing_field_names_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4, "vocab_size": 10}))
    with pytest.raises(ProfileError, match="num_hidden_layers"):
        load_model(str(path))


def test_model_config_bad_type_names_field(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: M\nconfig: {hidden_size: big, num_hidden_layers: 2, num_attention_heads: 2, vocab_size: 9}\n")
    with pytest.raises(ProfileError, match=r"m.yaml: field 'hidden_size'"):
        load_model(str(path))


def test_missing_profile_path_is_an_error():
    with pytest.raises(ProfileError, match="does not exist"):
        load_gpu("./nowhere/gpu.yaml")


_USER_GPU = ("name: MyGPU\npeak_bf16_tflops: 100\nmemory_gib: 32\nhbm_bandwidth_gbps: 1000\n"
             "interconnect_bandwidth_gbps: 50\npcie_bandwidth_gbps: 32\ncost_per_hour_usd: 1.5\n"
             "efficiency: {linear_mbu: 0.7, cpu_step_overhead_ms: 3.0}\n")


def test_a_profile_without_end_to_end_points_borrows_a_fitted_ones_software_values(tmp_path):
    """end_to_end_from takes the donor's end-to-end fitted values (the keys of its validation.prior), except
    the chip's own (clock under load, memory system), and no intervals: it is still uncalibrated."""
    from llmsim.hardware.profiles import CHIP_SPECIFIC

    donor = load_gpu("A100-80GB")
    own = tmp_path / "own.yaml"
    own.write_text(_USER_GPU)
    borrowing = tmp_path / "borrowing.yaml"
    borrowing.write_text(_USER_GPU + "end_to_end_from: A100-80GB\n")
    before, after = load_gpu(str(own)), load_gpu(str(borrowing))
    assert before.efficiency.cpu_step_overhead_s == pytest.approx(3e-3)
    assert after.efficiency.cpu_step_overhead_s == donor.efficiency.cpu_step_overhead_s
    assert after.api_server == donor.api_server
    assert after.efficiency.moe_gemm_bandwidth_efficiency == donor.efficiency.moe_gemm_bandwidth_efficiency
    assert "efficiency.linear_mbu" in CHIP_SPECIFIC and after.efficiency.linear_mbu == pytest.approx(0.7)
    assert after.residuals.by_class == () and "borrowed from the A100-80GB fit" in after.residuals.fitted_on
    assert load_gpu(str(borrowing), kernel_fit=True).efficiency.cpu_step_overhead_s == pytest.approx(3e-3)


@pytest.mark.parametrize("line, expected", [
    ("end_to_end_from: RTX-4090\n", "RTX-4090 has no end-to-end fit to lend"),
    ("end_to_end_from: Z100\n", "end_to_end_from: unknown gpu profile 'Z100'"),
    ("end_to_end_from: 3\n", "expected the name of a GPU profile"),
    ("end_to_end_from: H100\nvalidation: {fitted_on: x}\n", "fitted end to end itself"),
    ("end_to_end_from: H100\napi_server: 3\n", "field 'api_server'"),
])
def test_a_bad_end_to_end_donor_is_one_line_naming_the_file(tmp_path, line, expected):
    path = tmp_path / "borrowing.yaml"
    path.write_text(_USER_GPU + line)
    with pytest.raises(ProfileError) as info:
        load_gpu(str(path))
    assert expected in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_profiles_show_lists_the_end_to_end_values_a_gpu_borrows(capsys):
    from llmsim.cli import main

    assert main(["profiles", "show", "H20"]) == 0
    out = capsys.readouterr().out
    assert "borrowed from A100-80GB" in out
    donor = load_gpu("A100-80GB")
    assert f"efficiency.cpu_step_overhead_ms: {donor.efficiency.cpu_step_overhead_s * 1e3:.5f}".rstrip("0") in out
    assert "efficiency.linear_mbu" not in out.split("derived:")[1]  # the chip's own value is not borrowed
    assert main(["profiles", "show", "A100-80GB"]) == 0
    assert "borrowed" not in capsys.readouterr().out


def test_an_empty_section_takes_the_borrowed_values(tmp_path):
    path = tmp_path / "borrowing.yaml"
    path.write_text(_USER_GPU + "end_to_end_from: H100\napi_server:\n")  # an empty block, as YAML allows
    assert load_gpu(str(path)).api_server == load_gpu("H100").api_server
