"""Load GPU and model profiles by name or from a user's file.

Profiles live in ``hardware_profiles/{gpus,models}/*.yaml`` at the top of a source checkout, and inside the
installed package as ``llmsim/hardware_profiles`` (the wheel force-includes the folder). A name is matched
case-insensitively against each profile's ``name`` and ``aliases``; anything that looks like a path
(``.yaml``, ``.yml``, ``.json`` or an existing file) is read directly, so ``hardware.gpu: ./my_gpu.yaml``
and ``hardware.model: ./config.json`` (a Hugging Face config) both work.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from llmsim.errors import ProfileError, did_you_mean
from llmsim.hardware.hf_config import model_from_hf_config
from llmsim.hardware.profile_schema import GPUYAML
from llmsim.hardware.precision import split_quant_suffix
from llmsim.hardware.specs import GPUSpec
from llmsim.hardware.model_spec import ModelSpec

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def user_profiles_dir() -> Path:
    """Where ``llmsim profiles add-gpu|add-model`` writes and where lookups search first: a per-user folder
    (``$LLMSIM_PROFILES_DIR``, else the platform's user data folder, e.g. ``~/.local/share/llmsim/profiles``),
    so added profiles survive a reinstall and never touch the installed package."""
    if os.environ.get("LLMSIM_PROFILES_DIR"):
        return Path(os.environ["LLMSIM_PROFILES_DIR"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("llmsim")) / "profiles"


def profiles_dir() -> Path:
    """The folder holding ``gpus/`` and ``models/``: the installed copy, else the checkout's top level."""
    for candidate in (_PACKAGE_DIR / "hardware_profiles", _PACKAGE_DIR.parent / "hardware_profiles"):
        if (candidate / "gpus").is_dir():
            return candidate
    raise FileNotFoundError(f"hardware_profiles not found next to {_PACKAGE_DIR}")



def _one_line(error: ValidationError, path: Path) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"{path}: field '{where}': {first['msg']}"


_PARSED: dict[tuple[str, int, int], dict[str, Any]] = {}


def _read_mapping(path: Path) -> dict[str, Any]:
    """The profile file's mapping. Parsed once per file version: sweeps build many runs from the same files."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc.strerror})") from None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    cached = _PARSED.get(key)
    if cached is None:
        cached = _PARSED[key] = _parse_mapping(path)
    return copy.deepcopy(cached)


def _parse_mapping(path: Path) -> dict[str, Any]:
    from llmsim.errors import UserError
    from llmsim.inputs import read_yaml

    try:
        data = read_yaml(path, "profile")  # JSON is a subset of YAML, so config.json loads the same way
    except UserError as exc:
        raise ProfileError(str(exc)) from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping of fields at the top level")
    return data


def gpu_from_file(path: Path, kernel_fit: bool = False) -> GPUSpec:
    """A GPU profile file; ``kernel_fit`` gives its values before any end-to-end fit (``validation.prior``):
    what the datasheet and the kernel microbenchmarks alone say, without the end-to-end residuals."""
    data = _read_mapping(path)
    if kernel_fit and isinstance(data.get("validation"), dict):
        prior = data["validation"].get("prior") or {}
        data = copy.deepcopy(data)
        for key, value in prior.items():
            _set_value(data, key, value)
        data.pop("validation")
    elif data.get("end_to_end_from") is not None:
        if kernel_fit:  # its own values, nothing borrowed (_read_mapping gave a copy)
            data.pop("end_to_end_from")
        else:
            data = _borrow_end_to_end(data, path)
    try:
        return GPUYAML.model_validate(data).to_spec(str(path))
    except ValidationError as exc:
        raise ProfileError(_one_line(exc, path)) from None


#: End-to-end fitted values that belong to the chip (its clock under a power limit, its memory system): a
#: profile borrowing another's end-to-end fit keeps its own kernel-fit values of these.
CHIP_SPECIFIC = frozenset({"efficiency.sustained_compute_fraction", "efficiency.linear_mbu", "efficiency.attn_decode_mbu"})


def _borrow_end_to_end(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """``data`` with the end-to-end fitted values of the profile its ``end_to_end_from`` names.

    Why: the end-to-end fit sets what no kernel benchmark sees (engine CPU time, the API server, the fused-MoE and
    weight-only kernels' share of peak), and these are mostly software and host properties; the chip's own values
    (CHIP_SPECIFIC) stay. Predicting each fitted GPU's points with another GPU's end-to-end values instead of its
    kernel-fit defaults cut the errors roughly in half (docs/validation.md, "GPUs without end-to-end points")."""
    donor_name = data["end_to_end_from"]
    if not isinstance(donor_name, str):
        raise ProfileError(f"{path}: end_to_end_from: expected the name of a GPU profile, got {donor_name!r}")
    if data.get("validation"):
        raise ProfileError(f"{path}: end_to_end_from: this profile is fitted end to end itself (it has a "
                           "validation block); remove one of the two")
    for key, value in _lent_values(donor_name, path).items():
        _set_value(data, key, value)
    return data


def _set_value(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``block.name`` of a profile mapping; a block that is absent or empty (``api_server:`` alone) becomes one,
    one of another type is left for the schema to report, naming the field."""
    block, name = key.split(".", 1)
    if data.get(block) is None:
        data[block] = {}
    if isinstance(data[block], dict):
        data[block][name] = value


def _lent_values(donor_name: str, path: Path) -> dict[str, Any]:
    """``block.key`` → value: what the fitted profile ``donor_name`` lends (its end-to-end fitted values, the chip's
    own excepted)."""
    donor = _read_mapping(_resolve(donor_name, "gpus", f"{path}: end_to_end_from"))
    validation = donor.get("validation")
    fitted = validation.get("prior") if isinstance(validation, dict) else None
    if not fitted:
        raise ProfileError(f"{path}: end_to_end_from: {donor_name} has no end-to-end fit to lend (no "
                           "validation.prior); name a profile fitted by llmsim calibrate fit-e2e")
    lent = {}
    for key in fitted:
        block, name = key.split(".", 1)
        value = (donor.get(block) or {}).get(name)
        if key not in CHIP_SPECIFIC and value is not None:
            lent[key] = value
    return lent


def borrowed_end_to_end(name_or_path: str) -> tuple[Optional[str], dict[str, Any]]:
    """(donor, ``block.key`` → value) of the end-to-end values a GPU profile borrows; (None, {}) when it borrows
    none (it is fitted itself, or has no ``end_to_end_from``)."""
    path = _resolve(name_or_path, "gpus", "hardware.gpu")
    donor = _read_mapping(path).get("end_to_end_from")
    return (donor, _lent_values(donor, path)) if isinstance(donor, str) else (None, {})


# ---------------------------------------------------------------------------------------------------
# Model profiles: {name, aliases, sources, config: <Hugging Face config.json fields>} or a bare config.json
# ---------------------------------------------------------------------------------------------------
_MODEL_TOP_KEYS = {"name", "aliases", "sources", "notes", "config"}


def model_from_file(path: Path) -> ModelSpec:
    data = _read_mapping(path)
    if "config" not in data:  # a bare Hugging Face config.json
        name = str(data.get("_name_or_path") or path.parent.name if path.name == "config.json" else path.stem)
        return model_from_hf_config(data, name.split("/")[-1] or path.stem, path)
    unknown = sorted(set(data) - _MODEL_TOP_KEYS)
    if unknown:
        raise ProfileError(f"{path}: field '{unknown[0]}' is not allowed; expected {sorted(_MODEL_TOP_KEYS)}")
    if not isinstance(data["config"], dict):
        raise ProfileError(f"{path}: field 'config': expected a mapping of Hugging Face config fields")
    name = str(data.get("name") or path.stem)
    return model_from_hf_config(data["config"], name, path, tuple(data.get("aliases") or ()))


# ---------------------------------------------------------------------------------------------------
# Lookup by name
# ---------------------------------------------------------------------------------------------------
def _looks_like_path(name_or_path: str) -> bool:
    return name_or_path.endswith((".yaml", ".yml", ".json"))


def _profile_files(kind: str) -> list[Path]:
    """Profile files of a kind: the bundled ones, then the user's (which win on equal names)."""
    files = sorted((profiles_dir() / kind).glob("*.yaml"))
    user = user_profiles_dir() / kind
    return files + (sorted(user.glob("*.yaml")) if user.is_dir() else [])


_INDEXES: dict[str, tuple[tuple, dict[str, Path]]] = {}  # kind -> (its files' signature, index)


def _index(kind: str) -> dict[str, Path]:
    """Lower-cased name and aliases of every known profile of a kind -> its file (user profiles first). Kept
    while no file of the kind is added, removed or rewritten: a run resolves several names, a sweep thousands."""
    files = _profile_files(kind)
    signature = tuple((str(path), *_stamp(path)) for path in files)
    cached = _INDEXES.get(kind)
    if cached is not None and cached[0] == signature:
        return cached[1]
    index: dict[str, Path] = {}
    for path in files:
        data = _read_mapping(path)
        for key in [data.get("name", path.stem), *(data.get("aliases") or [])]:
            index[str(key).lower()] = path
    _INDEXES[kind] = (signature, index)
    return index


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)  # gone since the listing: the read reports it
    return (stat.st_mtime_ns, stat.st_size)


def profile_names(kind: str) -> dict[str, list[str]]:
    """Every known profile of a kind (``gpus`` or ``models``): name -> its aliases, bundled and user ones."""
    names: dict[str, list[str]] = {}
    for path in _profile_files(kind):
        data = _read_mapping(path)
        name = str(data.get("name", path.stem))
        seen = {name.lower()}
        names[name] = [str(a) for a in data.get("aliases") or []
                       if str(a).lower() not in seen and not seen.add(str(a).lower())]
    return names


def _bundled_names(kind: str) -> list[str]:
    return list(profile_names(kind))


def _resolve(name_or_path: str, kind: str, field_name: str) -> Path:
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    index = _index(kind)
    path = index.get(name_or_path.lower())  # names may contain '/' (Hugging Face ids)
    if path is not None:
        return path
    if _looks_like_path(name_or_path):
        raise ProfileError(f"{field_name}: profile file {name_or_path} does not exist")
    names = _bundled_names(kind)
    raise ProfileError(
        f"{field_name}: unknown {kind[:-1]} profile {name_or_path!r}{did_you_mean(name_or_path, names)}; "
        f"valid names: {', '.join(names)} (or a path to a profile file)"
    )


def load_gpu(name_or_path: str, kernel_fit: bool = False) -> GPUSpec:
    """GPU profile by name/alias (``A100-80GB``, ``H100``) or from a YAML path (``kernel_fit``: see
    :func:`gpu_from_file`)."""
    return gpu_from_file(_resolve(name_or_path, "gpus", "hardware.gpu"), kernel_fit=kernel_fit)


def load_model(name_or_path: str) -> ModelSpec:
    """Model profile by name/alias (``Llama-2-7B``) or from a profile YAML / Hugging Face config.json path.

    A Hugging Face id that is not itself an alias resolves through three general rules: a quantization suffix
    (``-FP8``, ``-AWQ``, ``-FP8-KV``, ``-GPTQ-Int4`` ...) names the same architecture stored at that precision,
    an unknown organisation (``amd/``, ``NousResearch/``) may re-publish a known model under its own name (the
    part after the ``/`` is tried alone), and a tune suffix (``-Instruct``, ``-it``, ``-2507`` ...) keeps its base
    model's architecture (:func:`_tuned_bases`).
    """
    try:
        return model_from_file(_resolve(name_or_path, "models", "hardware.model"))
    except ProfileError as exc:
        spec = _model_by_checkpoint_name(name_or_path)
        if spec is None:
            raise exc from None
        return spec


#: A suffix naming a tune or repackaging of a checkpoint, which keeps its base model's architecture: instruction,
#: chat and reasoning tunes, Hugging Face conversions, base releases, dated releases (``-2507``).
_TUNE_SUFFIX = re.compile(r"-(instruct|chat|it|hf|base|thinking|\d{4})$", re.IGNORECASE)


def _tuned_bases(name: str) -> list[str]:
    """``name``, then ``name`` without its tune suffixes one at a time (``Meta-Llama-3-8B-Instruct`` →
    ``Meta-Llama-3-8B``; ``Llama-2-7b-chat-hf`` → ``Llama-2-7b-chat`` → ``Llama-2-7b``)."""
    names = [name]
    while (match := _TUNE_SUFFIX.search(names[-1])) and match.start() > 0:
        names.append(names[-1][: match.start()])
    return names


def _model_by_checkpoint_name(name: str) -> Optional[ModelSpec]:
    if _looks_like_path(name) or Path(name).expanduser().is_file():
        return None
    base, quant = split_quant_suffix(name)
    index = _index("models")
    for candidate in dict.fromkeys(n for full in (base, base.split("/")[-1]) for n in _tuned_bases(full)):
        path = index.get(candidate.lower())
        if path is None:
            continue
        spec = model_from_file(path)
        if quant == "mxfp4":  # MXFP4 checkpoints quantize the routed experts only (gpt-oss)
            return dataclasses.replace(spec, expert_weight_quant=quant)
        if quant == "bf16":  # every weight in the 16-bit model dtype
            return dataclasses.replace(spec, weight_quant=None, expert_weight_quant=None)
        if quant is not None:
            return dataclasses.replace(spec, weight_quant=quant, expert_weight_quant=None)
        return spec
    return None


def list_gpus() -> list[str]:
    return _bundled_names("gpus")


def list_models() -> list[str]:
    return _bundled_names("models")


__all__ = ["load_gpu", "load_model", "list_gpus", "list_models", "profile_names", "profiles_dir", "user_profiles_dir",
           "model_from_hf_config"]
