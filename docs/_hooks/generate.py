"""mkdocs hooks: the reference pages are generated from the code, and the figures come from the commands' outputs.

- ``reference/cli.md`` is the ``--help`` of every ``llmsim`` command, read from the typer app;
- ``reference/config.md`` is ``llmsim config --reference``, read from the pydantic models;
- ``figures/*.png`` are the PNGs the documented commands write under ``experiments/results/`` and
  ``experiments/figures/`` (nothing is copied into docs/, so a figure is always the one its command made);
- nav entries whose page does not exist (yet) are dropped, so pages other branches add can be listed ahead.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[2]
FIGURE_DIRS = ("experiments/results", "experiments/figures")


def on_config(config):
    docs_dir = Path(config["docs_dir"])
    generated = {"reference/cli.md", "reference/config.md"}

    def keep(entry) -> bool:
        if isinstance(entry, str):
            return entry in generated or (docs_dir / entry).is_file() or "://" in entry
        if isinstance(entry, dict):
            for key, value in list(entry.items()):
                if isinstance(value, list):
                    entry[key] = [item for item in value if keep(item)]
                    return bool(entry[key])
                return keep(value)
        return True

    if config.get("nav"):
        config["nav"] = [entry for entry in config["nav"] if keep(entry)]
    return config


def on_files(files, config):
    files.append(File.generated(config, "reference/cli.md", content=cli_reference()))
    files.append(File.generated(config, "reference/config.md", content=config_reference()))
    for folder in FIGURE_DIRS:
        for png in sorted((REPO / folder).glob("*.png")):
            files.append(File.generated(config, f"figures/{png.name}", abs_src_path=str(png)))
    return files


def cli_reference() -> str:
    import typer

    from llmsim.cli import app

    root = typer.main.get_command(app)
    lines = ["# Command-line reference", "",
             "Generated from the `llmsim` typer app: each section is that command's `--help`.", ""]

    def walk(command, path: list[str]) -> None:
        ctx = command.context_class(command, info_name=" ".join(path), parent=None)
        lines.extend([f"## `{' '.join(path)}`", "", "```text", command.get_help(ctx).rstrip(), "```", ""])
        if hasattr(command, "list_commands"):  # a group (typer may vendor click, so no isinstance check)
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), [*path, name])

    walk(root, ["llmsim"])
    return "\n".join(lines)


def config_reference() -> str:
    from llmsim.config import config_reference_markdown

    return ("# Config reference\n\nGenerated from the pydantic models (the same table as `llmsim config --reference`). "
            "Every field can be set in the YAML file or with `--set PATH=VALUE`.\n\n" + config_reference_markdown())
