"""The example files the documentation uses (configs, a small trace, a sweep spec, cluster configs).

They live in ``examples/`` at the top of a source checkout and inside the installed package as
``llmsim/examples`` (the wheel force-includes the folder, like ``hardware_profiles``), so
``llmsim examples copy DIR`` gives every user the same files the docs run, whichever way llmsim was installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from llmsim.errors import UserError

_PACKAGE_DIR = Path(__file__).resolve().parent


def examples_dir() -> Path:
    """The folder holding the examples: the installed copy, else the checkout's top level."""
    for candidate in (_PACKAGE_DIR / "examples", _PACKAGE_DIR.parent / "examples"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise UserError(f"the example files are missing next to {_PACKAGE_DIR}; reinstall llmsim")


def example_files() -> list[Path]:
    return sorted(p for p in examples_dir().iterdir() if p.is_file() and not p.name.startswith("."))


def copy_examples(target: Path, force: bool = False) -> list[Path]:
    """Copy every example file into ``target`` (created if needed); existing files are kept unless ``force``."""
    if target.exists() and not target.is_dir():
        raise UserError(f"examples copy: {target} exists and is not a folder")
    target.mkdir(parents=True, exist_ok=True)
    clashes = [p.name for p in example_files() if (target / p.name).exists()]
    if clashes and not force:
        raise UserError(f"examples copy: {target} already holds {', '.join(clashes)}; pass --force to overwrite")
    copied = []
    for source in example_files():
        shutil.copyfile(source, target / source.name)
        copied.append(target / source.name)
    return copied


examples_app = typer.Typer(help="The example files the documentation uses.", no_args_is_help=True,
                           rich_markup_mode=None)


@examples_app.command("list")
def list_command() -> None:
    """List the example files (the first comment line of each says what it is)."""
    for path in example_files():
        typer.echo(f"{path.name:28} {_first_comment(path)}")


@examples_app.command("copy")
def copy_command(
    target: Path = typer.Argument(..., help="folder to copy the examples into (created if missing)"),
    force: bool = typer.Option(False, "--force", help="overwrite files that already exist"),
) -> None:
    """Copy every example file into TARGET, so the documentation's commands run there as written."""
    copied = copy_examples(target, force)
    typer.echo(f"copied {len(copied)} example files to {target}: {', '.join(p.name for p in copied)}")


def _first_comment(path: Path) -> Optional[str]:
    descriptions = {
        "trace.csv": "a small trace: 353 requests in 5 minutes (llmsim generate --preset burstgpt --rate 2 --duration 300)",
        "bad.csv": "a trace with a negative token count in row 2 (to see llmsim's error)",
        "tinyllama_config.json": "a Hugging Face config.json (TinyLlama-1.1B), for llmsim profiles add-model",
    }
    if path.name in descriptions:
        return descriptions[path.name]
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
