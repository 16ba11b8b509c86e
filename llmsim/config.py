"""One YAML document → one typed, validated :class:`SimConfig`.

The config is nested like the package tree (``workload:``, ``hardware:``, ``scheduler:`` …) and each
section's model lives next to the code it configures. Validation happens here, at the edge: after
:func:`load_config` returns, the rest of llmsim works with plain typed objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

import yaml
from pydantic import Field, ValidationError

from llmsim.cluster.config import ClusterConfig
from llmsim.configbase import StrictModel
from llmsim.engine.config import ClientConfig, EngineConfig, SchedulerConfig
from llmsim.engine.server import ServerConfig
from llmsim.engine.speculative import SpeculativeConfig
from llmsim.errors import ConfigError, UserError, did_you_mean
from llmsim.hardware.config import HardwareConfig
from llmsim.metrics.config import MetricsConfig, OutputConfig, SLOConfig
from llmsim.workload.config import WorkloadConfig


class SimConfig(StrictModel):
    """Everything one simulation run needs. Same config + same seed ⇒ byte-identical outputs."""

    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of every random draw in the run (0 to 2^63 − 1)")
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    speculative: SpeculativeConfig = Field(default_factory=SpeculativeConfig)
    client: ClientConfig = Field(default_factory=ClientConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    slo: SLOConfig = Field(default_factory=SLOConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)


DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.yaml")


def _read_yaml(path: Path) -> dict[str, Any]:
    from llmsim.inputs import read_yaml

    try:
        data = read_yaml(path, "config file")
    except ConfigError:
        raise
    except UserError as exc:
        raise ConfigError(str(exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``scheduler.max_num_seqs=64`` → (["scheduler", "max_num_seqs"], 64). Values are YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected PATH=VALUE joined by '=' (e.g. --set scheduler.max_num_seqs=64), "
                          "not two words")
    path, _, raw = text.partition("=")
    keys = [k for k in path.strip().split(".")]
    if not all(keys):
        raise ConfigError(f"--set {text!r}: empty name in config path {path!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, RecursionError):
        value = raw
    return keys, value


def apply_override(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``data[k0][k1]... = value``, creating intermediate mappings (validation names bad paths)."""
    node = data
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {'.'.join(keys[: depth + 1])} is a value, not a section")
        node = child
    node[keys[-1]] = value


def format_validation_error(exc: ValidationError, source: str) -> str:
    """The first problem as one line: ``source: field a.b.c: message (got X)``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key" + did_you_mean(err["loc"][-1], _field_names_at(err["loc"][:-1]))
    got = err.get("input")
    got_text = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
    more = len(exc.errors()) - 1
    tail = f"; and {more} more problem{'s' if more > 1 else ''}" if more else ""
    return f"{source}: config field {loc}: {msg}{got_text}{tail}"


def _field_names_at(loc: tuple) -> list[str]:
    """The valid keys of the config section at ``loc`` (for "did you mean"); empty where it is not a section."""
    from pydantic import BaseModel

    model: Any = SimConfig
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = field.annotation
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def build_config(data: dict[str, Any], source: str = "config") -> SimConfig:
    try:
        return SimConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: Optional[str | Path] = None, overrides: Iterable[str] = ()) -> SimConfig:
    """Read a YAML config (the bundled default when ``path`` is None) and apply ``--set`` overrides."""
    config_path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    overrides = list(overrides)
    parsed = [parse_override(text) for text in overrides]  # first: `--set KEY VALUE` would name VALUE as the file
    data = _read_yaml(config_path)
    for keys, value in parsed:
        apply_override(data, keys, value)
    source = str(config_path) + (" with --set overrides" if overrides else "")
    return build_config(data, source)


def config_to_yaml(config: SimConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def config_reference_markdown() -> str:
    """Every config field as a markdown table (path, type, default, meaning), generated from the models."""
    from pydantic import BaseModel

    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]

    def type_name(annotation) -> str:
        import typing

        args = typing.get_args(annotation)
        if typing.get_origin(annotation) is typing.Literal:
            return "one of " + ", ".join(f"`{a}`" for a in args)
        if args and type(None) in args:
            inner = [type_name(a) for a in args if a is not type(None)]
            return " or ".join(inner) + " (optional)"
        if args:
            return f"{getattr(typing.get_origin(annotation), '__name__', 'list')}[{', '.join(type_name(a) for a in args)}]"
        return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            path = f"{prefix}{name}"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, path + ".")
                continue
            default = field.get_default(call_default_factory=True)
            default_text = "—" if default is None else f"`{default}`"
            description = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{path}` | {type_name(annotation)} | {default_text} | {description} |")

    walk(SimConfig, "")
    return "\n".join(rows) + "\n"
