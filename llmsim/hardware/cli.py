"""``llmsim calibrate ...`` and ``llmsim profiles ...``: typer sub-apps the main CLI mounts.

Wire in llmsim/cli.py with ``app.add_typer(calibrate_app, name="calibrate")`` and
``app.add_typer(profiles_app, name="profiles")``. User mistakes raise :class:`llmsim.errors.UserError`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import List, Optional

import typer
import yaml

from llmsim.errors import ProfileError, UserError
from llmsim.hardware import calibration as cal
from llmsim.hardware.profiles import list_gpus, list_models, load_gpu, load_model, profile_names, user_profiles_dir
from llmsim.hardware.specs import GIB, Efficiency

calibrate_app = typer.Typer(help="Check or refit the timing model against measured GPU timings.", no_args_is_help=True)
profiles_app = typer.Typer(help="List, show and add GPU and model profiles.", no_args_is_help=True)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _require(path: Optional[Path], what: str) -> Path:
    if path is not None:
        from llmsim.inputs import check_text_file

        try:
            check_text_file(path, "measurement file")
        except UserError as exc:
            raise UserError(f"{what}: {exc}") from None
    return path


@calibrate_app.command("check")
def check(
    mlp_csv: Optional[Path] = typer.Argument(None, help="Vidur-format mlp.csv of one model on one GPU"),
    gpu: str = typer.Option(..., "--gpu", help="GPU profile name or YAML path"),
    collective: Optional[Path] = typer.Option(None, "--collective", help="all_reduce.csv or send_recv.csv"),
    attention: Optional[Path] = typer.Option(None, "--attention", help="Vidur-format attention.csv"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the figures as JSON here"),
) -> dict:
    """Predict every measured row and print the mean absolute percentage error (MAPE)."""
    from llmsim.inputs import check_output_file

    check_output_file(json_out, "--json")
    spec = load_gpu(gpu)
    if mlp_csv is None and collective is None and attention is None:
        raise UserError("calibrate check: give an MLP_CSV, --collective FILE or --attention FILE")
    result: dict = {"gpu": spec.name}
    if mlp_csv is not None:
        r = cal.check_mlp(_require(mlp_csv, "MLP_CSV"), spec)
        result.update(mlp_file=r["file"], rows=r["rows"], mape_layer=r["mape_layer"], mape_by_op=r["mape_by_op"])
        typer.echo(f"{mlp_csv} on {spec.name}: {r['rows']} rows, per-layer MAPE {_pct(r['mape_layer'])}")
        for group, value in r["mape_by_op"].items():
            typer.echo(f"  {group:<12} {_pct(value)}")
    if collective is not None:
        r = cal.check_collective(_require(collective, "--collective"), spec)
        result.update({k: v for k, v in r.items() if k.startswith("mape")}, collective_file=r["file"])
        extra = "".join(f", {k[5:]} {_pct(v)}" for k, v in r.items() if k in ("mape_intra_node", "mape_inter_node"))
        typer.echo(f"{collective} on {spec.name}: {r['rows']} rows, MAPE {_pct(r['mape_collective'])}{extra}")
    if attention is not None:
        r = cal.check_attention(_require(attention, "--attention"), spec)
        result.update({k: v for k, v in r.items() if k.startswith("mape")}, attention_file=r["file"])
        typer.echo(
            f"{attention} on {spec.name}: {r['rows']} rows, attention MAPE {_pct(r['mape_attention'])} "
            f"(prefill {_pct(r['mape_prefill'])}, decode {_pct(r['mape_decode'])})"
        )
    if json_out is not None:
        from llmsim.fileio import atomic_write_text

        atomic_write_text(json_out, json.dumps(result, indent=2))
    return result


def efficiency_block(eff: Efficiency) -> str:
    """The ``efficiency:`` YAML block of a GPU profile (units as the profile schema uses)."""
    lines = ["efficiency:"]
    for field in dataclasses.fields(eff):
        value = getattr(eff, field.name)
        if field.name == "network_by_gpus":
            lines.append(f"  {field.name}:" + ("" if value else " []"))
            for per_node, efficiency, latency in value:
                lines.append(f"    - {{gpus_per_node: {per_node}, efficiency: {round(efficiency, 4)}, latency_us: {round(latency * 1e6, 3)}}}")
        elif field.name.endswith("_s"):
            unit = "_ms" if field.name.startswith("cpu_step") else "_us"
            lines.append(f"  {field.name[:-2]}{unit}: {round(value * (1e3 if unit == '_ms' else 1e6), 3)}")
        elif field.name.endswith("_bytes"):
            lines.append(f"  {field.name[:-6]}_mb: {round(value / 1e6, 3)}")
        elif isinstance(value, str):
            lines.append(f"  {field.name}: {json.dumps(value)}")
        elif isinstance(value, float):
            lines.append(f"  {field.name}: {round(value, 4)}")
        else:
            lines.append(f"  {field.name}: {value}")
    return "\n".join(lines) + "\n"


def write_efficiency(path: Path, eff: Efficiency) -> None:
    """Replace (or add) the ``efficiency:`` block of a GPU YAML, keeping every other line as written."""
    kept, skipping = [], False
    for line in Path(path).read_text().splitlines():
        if line.startswith("efficiency:"):
            skipping = True
            continue
        if skipping and (line.startswith(" ") or not line.strip()):
            continue
        skipping = False
        kept.append(line)
    Path(path).write_text("\n".join(kept) + "\n" + efficiency_block(eff))


@calibrate_app.command("fit")
def fit(
    gpu: str = typer.Option(..., "--gpu", help="GPU profile to refit"),
    mlp: List[Path] = typer.Option([], "--mlp", help="mlp.csv files measured on this GPU (repeatable)"),
    collective: List[Path] = typer.Option([], "--collective", help="all_reduce.csv files of this GPU's setup"),
    send_recv: List[Path] = typer.Option([], "--send-recv", help="send_recv.csv files of this GPU's setup"),
    attention: List[Path] = typer.Option([], "--attention", help="attention.csv files measured on this GPU"),
    write: bool = typer.Option(False, "--write", help="store the fitted values in the GPU profile YAML"),
) -> Efficiency:
    """Refit the GPU's efficiency factors on measurement files and print (or --write) them."""
    spec = load_gpu(gpu)
    if not (mlp or collective or send_recv or attention):
        raise UserError("calibrate fit: give at least one of --mlp, --collective, --send-recv, --attention")
    notes = []
    eff = spec.efficiency
    for files, fitter, kind in (
        (mlp, cal.fit_mlp, "mlp"),
        (collective, cal.fit_collective, "all_reduce"),
        (send_recv, cal.fit_send_recv, "send_recv"),
        (attention, cal.fit_attention, "attention"),
    ):
        if files:
            for f in files:
                _require(f, f"--{kind}")
            spec = dataclasses.replace(spec, efficiency=eff)
            eff = fitter(files, spec)
            notes.append(f"{kind}: " + ", ".join(_short(f) for f in files))
    eff = dataclasses.replace(eff, fitted_on="; ".join(notes))
    typer.echo(efficiency_block(eff), nl=False)
    if write:
        if not spec.source_file:
            raise ProfileError(f"hardware.gpu: profile {gpu} has no file to write to")
        write_efficiency(Path(spec.source_file), eff)
        typer.echo(f"wrote {spec.source_file}")
    return eff


def _short(path: Path) -> str:
    parts = Path(path).parts
    return "/".join(parts[parts.index("vidur_profiling") :]) if "vidur_profiling" in parts else str(path)


@profiles_app.command("list")
def list_profiles() -> None:
    """Known GPU and model profiles (bundled and your own) with their aliases."""
    for kind, title in (("gpus", "GPUs"), ("models", "Models")):
        typer.echo(f"{title}:")
        for name, aliases in profile_names(kind).items():
            typer.echo(f"  {name}" + (f"  (aliases: {', '.join(aliases)})" if aliases else ""))
    typer.echo(f"Your profiles (profiles add-gpu / add-model): {user_profiles_dir()}")


@profiles_app.command("show")
def show(name: str = typer.Argument(..., help="GPU or model profile name (or path)")) -> None:
    """Print a profile with its derived quantities."""
    try:
        gpu = load_gpu(name)
    except ProfileError:
        gpu = None
    if gpu is not None:
        from llmsim.hardware.profiles import borrowed_end_to_end

        typer.echo(Path(gpu.source_file).read_text().rstrip())
        donor, lent = borrowed_end_to_end(gpu.source_file)
        if donor:
            typer.echo(f"derived:\n  end-to-end values in effect, borrowed from {donor} (they replace the ones above):")
            for key, value in lent.items():
                typer.echo(f"    {key}: {value}")
        return
    try:
        model = load_model(name)
    except ProfileError:
        raise UserError(
            f"profiles show: {name!r} is neither a GPU ({', '.join(list_gpus())}) nor a model ({', '.join(list_models())})"
        ) from None
    typer.echo(Path(model.source_file).read_text().rstrip())
    typer.echo("derived:")
    typer.echo(f"  parameters: {model.num_params / 1e9:.2f}B ({model.active_params_per_token / 1e9:.2f}B active per token)")
    dense, expert = model.weight_precisions()
    precision = dense if dense == expert or not model.is_moe else f"{dense}, experts {expert}"
    typer.echo(f"  weights: {model.weight_bytes() / GIB:.2f} GiB in {precision}")
    if model.num_sliding_layers:
        typer.echo(f"  attention: {model.num_sliding_layers} of {model.num_layers} layers slide over {model.sliding_window} tokens")
    typer.echo(f"  head_dim: {model.head_dim}")
    typer.echo(f"  KV cache: {model.kv_bytes_per_token() / 1024:.1f} KiB per token in {model.dtype}")


@profiles_app.command("coverage")
def coverage(
    points_csv: Path = typer.Argument(..., help="benchmark table with gpu, model, dtype/quantization, tp (pp, engine_flags) columns"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write one record per row as JSON here"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="also list every distinct modelled setup"),
) -> list:
    """How many rows resolve to profiles and fit their GPUs; the others with the reason."""
    from llmsim.hardware.coverage import check_points

    rows = check_points(_require(points_csv, "POINTS_CSV"))
    good = [r for r in rows if r.ok]
    typer.echo(f"{points_csv}: {len(good)} of {len(rows)} rows modelled ({_pct(len(good) / max(1, len(rows)))})")
    shown: set = set()
    for r in rows:
        key = (r.gpu, r.model, r.quantization, r.reason)
        if key in shown or (r.ok and not verbose):
            continue
        shown.add(key)
        count = sum(1 for o in rows if (o.gpu, o.model, o.quantization, o.reason) == key)
        if r.ok:
            d, c = r.deployment, r.capacity
            typer.echo(
                f"  ok   {count:3d} x {r.gpu} | {r.model} -> {d.gpu}, {d.model} (weights {d.weight_dtype}, experts "
                f"{d.expert_weight_dtype}, kv {d.kv_cache_dtype}): {c.weight_bytes_per_gpu / GIB:.1f} GiB weights/GPU, "
                f"{c.num_tokens} KV tokens{'; ' + d.note if d.note else ''}"
            )
        else:
            typer.echo(f"  skip {count:3d} x {r.gpu} | {r.model} | {r.quantization}: {r.reason}")
    if json_out is not None:
        records = [
            {
                "id": r.row_id,
                "ok": r.ok,
                "reason": r.reason,
                **({"gpu_profile": r.deployment.gpu, "model_profile": r.deployment.model,
                    "weight_dtype": r.deployment.weight_dtype, "expert_weight_dtype": r.deployment.expert_weight_dtype,
                    "kv_cache_dtype": r.deployment.kv_cache_dtype, "note": r.deployment.note} if r.deployment else {}),
                **({"weight_gib_per_gpu": r.capacity.weight_bytes_per_gpu / GIB, "kv_tokens": r.capacity.num_tokens}
                   if r.capacity else {}),
            }
            for r in rows
        ]
        Path(json_out).write_text(json.dumps(records, indent=2))
    return rows


def _add(source: Path, kind: str, name: Optional[str]) -> Path:
    _require(source, f"profiles add-{kind[:-1]}")
    spec = (load_gpu if kind == "gpus" else load_model)(str(source))  # validates before copying
    target = user_profiles_dir() / kind / f"{name or spec.name}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise UserError(f"profiles add-{kind[:-1]}: {target} already exists; pass --name to choose another name")
    if kind == "gpus":
        shutil.copyfile(source, target)
    else:
        from llmsim.inputs import read_yaml

        config = read_yaml(source, "profile")
        if "config" not in config:
            config = {"name": name or spec.name, "sources": {"config": str(source)}, "config": config}
        target.write_text(yaml.safe_dump(config, sort_keys=False))
    typer.echo(f"added {target}")
    return target


@profiles_app.command("add-model")
def add_model(
    config_json: Path = typer.Argument(..., help="Hugging Face config.json or model profile YAML"),
    name: Optional[str] = typer.Option(None, "--name"),
) -> Path:
    """Add a model from its Hugging Face config.json."""
    return _add(config_json, "models", name)


@profiles_app.command("add-gpu")
def add_gpu(gpu_yaml: Path = typer.Argument(..., help="GPU profile YAML"), name: Optional[str] = typer.Option(None, "--name")) -> Path:
    """Add a GPU from a profile YAML (same fields as hardware_profiles/gpus/*.yaml)."""
    return _add(gpu_yaml, "gpus", name)
