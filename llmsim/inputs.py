"""Reading the user's input files and checking the user's output paths, in one place for every command.

Every file a user hands llmsim (a config, a sweep spec, a trace, a scenario, a profile, a measurement CSV)
is opened through :func:`read_text` / :func:`read_yaml` / :func:`read_json` / :func:`read_parquet`, which
turn every way a file can be unreadable into one :class:`~llmsim.errors.UserError` sentence naming the
file and what was expected: missing, a directory, unreadable, empty, binary, UTF-16 or Latin-1 instead of
UTF-8 (with the byte offset), YAML with a repeated key (PyYAML keeps the last one silently), corrupt
Parquet. Every path a command will write is checked by :func:`check_output_file` /
:func:`check_output_dir` *before* any work starts, so a bad ``-o`` costs no simulation and leaves nothing
behind.

Command-line numbers go through :func:`check_number` (finite, in range, named by their flag).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import yaml

from llmsim.errors import UserError

_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
         (b"\xfe\xff", "UTF-16"))


def check_input_file(path: str | Path, what: str = "input file") -> Path:
    """``path`` exists, is a regular file and can be opened for reading."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a {what}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: {what} is not readable (permission denied)")
    return path


def decode_utf8(data: bytes, path: str | Path, what: str = "file") -> str:
    """UTF-8 text (a UTF-8 BOM is dropped); any other encoding or binary data is a UserError."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise UserError(f"{path}: {what} is {name} text; expected UTF-8 (re-save it as UTF-8, "
                            f"e.g. iconv -f {name.replace('-', '')} -t UTF-8)")
    nul = data.find(b"\x00", 0, 65536)
    if nul >= 0:
        raise UserError(f"{path}: {what} looks binary (a NUL byte at offset {nul}); expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"{path} line {line}: {what} is not UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                        f"{exc.start}; Latin-1 or binary?); expected UTF-8 text") from None


def read_text(path: str | Path, what: str = "file", allow_empty: bool = True) -> str:
    """The file's text, decoded as UTF-8, after :func:`check_input_file`."""
    path = check_input_file(path, what)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if not allow_empty and not data.strip():
        raise UserError(f"{path}: {what} is empty")
    return decode_utf8(data, path, what)


def check_text_file(path: str | Path, what: str = "file") -> Path:
    """Check a file that another library will parse (pandas, pyarrow): present, and UTF-8 text if text.

    Reads at most the first 64 KiB and the last 4 KiB, so it costs nothing on multi-GB traces."""
    path = check_input_file(path, what)
    with open(path, "rb") as handle:
        head = handle.read(65536)
    if len(head) == 65536:  # a multi-byte character may straddle the cut: decode whole lines only
        head = head[: head.rfind(b"\n") + 1] or head[:65532]
    decode_utf8(head, path, what)
    return path


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader that refuses a mapping with the same key twice (PyYAML would keep the last silently). On
    libyaml's parser where PyYAML has it: about ten times faster, and a run resolves names against every bundled
    profile."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, f"unhashable key {key!r}", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first on line {seen[key] + 1}); "
                            "give each key once", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def parse_yaml(text: str, source: str | Path) -> Any:
    """YAML text → Python data (safe types only, no repeated keys); errors name the source and line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{source}{where}: not valid YAML ({one_line(problem)})") from None
    except RecursionError:
        raise UserError(f"{source}: not valid YAML (nested too deeply)") from None


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    return parse_yaml(read_text(path, what), path)


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """A JSON document (NaN and Infinity, which JSON does not have, are refused)."""
    text = read_text(path, what)

    def no_constants(name: str):
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def read_parquet(path: str | Path, what: str = "Parquet file", **kwargs):
    """A pandas DataFrame from a Parquet file; a corrupt or non-Parquet file is a UserError."""
    import pandas as pd

    path = check_input_file(path, what)
    try:
        return pd.read_parquet(path, **kwargs)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a corrupt file
        raise UserError(f"{path}: not a readable {what} ({type(exc).__name__}: "
                        f"{one_line(str(exc))[:160]})") from None


def one_line(text: str) -> str:
    return " ".join(str(text).split())


# ------------------------------------------------------------------------------------------- outputs
def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_creatable_under(path: Path, flag: str, shown: Optional[Path] = None) -> None:
    """Every existing ancestor of ``path`` is a directory and the nearest one accepts new files."""
    shown = shown or path
    ancestor = _nearest_existing(path.parent)  # (an existing file at ``path`` itself is simply replaced)
    for parent in [ancestor, *ancestor.parents]:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{flag} {shown}: {parent} is a file, so nothing can be written under it")
    if not ancestor.is_dir():
        raise UserError(f"{flag} {shown}: {ancestor} is a file, so nothing can be written under it")
    try:  # os.access says yes to root even on read-only or virtual file systems (/proc): try for real
        fd, probe = tempfile.mkstemp(prefix=".llmsim-write-check-", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{flag} {shown}: cannot write in {ancestor} ({exc.strerror or exc})") from None


def check_output_file(path: Optional[str | Path], flag: str = "-o", suffixes: tuple[str, ...] = ()) -> Optional[Path]:
    """Check that a file can be written at ``path`` (None passes): not a directory, under directories only,
    in a writable place, with one of ``suffixes`` when given. Creates nothing."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a directory; expected a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {path}: output must end in {' or '.join(suffixes)}")
    _check_creatable_under(path, flag)
    return path


def check_output_dir(path: Optional[str | Path], flag: str = "-o") -> Optional[Path]:
    """Check that ``path`` is (or can become) a directory llmsim can write in (None passes). Creates nothing."""
    if path is None:
        return None
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: is a file; expected a directory (or a new name)")
    _check_creatable_under(path / "x", flag, shown=path)
    return path


# ------------------------------------------------------------------------------------ numeric flags
def check_number(value: Optional[float], flag: str, *, minimum: Optional[float] = None,
                 maximum: Optional[float] = None, exclusive_minimum: bool = False) -> Optional[float]:
    """A command-line number: finite and within range, or a UserError naming ``flag`` (None passes)."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{flag}: expected a finite number, got {value}")
    low_ok = minimum is None or (value > minimum if exclusive_minimum else value >= minimum)
    if not low_ok or (maximum is not None and value > maximum):
        bound = ("greater than" if exclusive_minimum else "at least") + f" {minimum:g}" if minimum is not None else ""
        high = f"at most {maximum:g}" if maximum is not None else ""
        raise UserError(f"{flag}: expected a number {' and '.join(b for b in (bound, high) if b)}, got {value:g}")
    return value
