"""Every shell and Python block of the README and the docs runs as written, and prints what the text quotes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.docblocks import REPO, doc_pages, missing_lines, parse_blocks, run_block, scratch_root

PAGES = doc_pages()
README = REPO / "README.md"


def _has_slow_blocks(page: Path) -> bool:
    return any(b.marker == "slow" for b in parse_blocks(page.read_text()))


# The README's blocks run in the quick suite (they are the front door; its `<!-- slow -->` blocks, if any, in the
# slow suite). Each docs page runs once, slow blocks included, in the slow suite (about two minutes of CPU
# together), which .ci/run runs after the quick one.
PAGE_PARAMS = [pytest.param(README, False, id="README.md")]
PAGE_PARAMS += [pytest.param(README, True, id="README.md-with-slow-blocks", marks=pytest.mark.slow)] * _has_slow_blocks(README)
PAGE_PARAMS += [pytest.param(p, True, id=str(p.relative_to(REPO)), marks=pytest.mark.slow) for p in PAGES if p != README]


def _run_page(page: Path, tmp_path: Path, include_slow: bool) -> None:
    cwd = scratch_root(tmp_path)
    name = str(page.relative_to(REPO))
    for block in parse_blocks(page.read_text(), name):
        if not block.runs or (block.marker == "slow" and not include_slow):
            continue
        proc = run_block(block, cwd)
        output = proc.stdout
        where = f"{name}:{block.line} ({block.lang} block)"
        assert proc.returncode == 0, f"{where} failed with exit status {proc.returncode}:\n{block.code}\n{output[-3000:]}"
        if block.expected is not None:
            missing = missing_lines(block.expected, output)
            assert not missing, f"{where}: output lacks the quoted lines {missing}\n--- output ---\n{output[-3000:]}"


@pytest.mark.parametrize("page, include_slow", PAGE_PARAMS)
def test_doc_blocks_run_as_written(page: Path, include_slow: bool, tmp_path: Path) -> None:
    _run_page(page, tmp_path, include_slow)


def test_markers_and_quoted_output_are_parsed() -> None:
    text = ("<!-- no-run -->\n```bash\nrm -rf /\n```\n\n```bash\necho hi\n```\n\n```text\nhi\n```\n"
            "<!-- slow -->\n```python\nprint(1)\n```\n```yaml\na: 1\n```\n")
    blocks = parse_blocks(text)
    assert [(b.lang, b.marker, b.runs) for b in blocks] == [
        ("bash", "no-run", False), ("bash", None, True), ("text", None, False), ("python", "slow", True),
        ("yaml", None, False)]
    assert blocks[1].expected == "hi\n" and blocks[3].expected is None
    assert missing_lines("a  b\n...\nd\n", "x\na b\nc\nd\n") == []
    assert missing_lines("d\na b\n", "a b\nd\n") == ["a b"]  # order matters
    assert missing_lines("error: .../x.yaml: bad\n", "error: /some/where/x.yaml: bad\n") == []


def test_every_docs_page_is_in_the_nav() -> None:
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("tag:", lambda loader, suffix, node: None)
    nav = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=_Loader)["nav"]
    listed: set[str] = set()

    def walk(entry) -> None:
        if isinstance(entry, str):
            listed.add(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                walk(value)
        elif isinstance(entry, list):
            for item in entry:
                walk(item)

    walk(nav)
    pages = {str(p.relative_to(REPO / "docs")) for p in PAGES if p.parent != REPO}
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    try:
        import material  # noqa: F401  (mkdocs-material)
        import mkdocstrings  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("mkdocs-material and mkdocstrings must be installed under CI (the dev extra)")
        pytest.skip("mkdocs-material / mkdocstrings not installed: pip install -e '.[dev]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_generated_references_cover_every_command_and_field() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "_hooks" / "generate.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    cli = hooks.cli_reference()
    for command in ("llmsim run", "llmsim sweep", "llmsim plan", "llmsim profiles add-model", "llmsim examples copy"):
        assert f"## `{command}`" in cli
    assert "`scheduler.max_num_seqs`" in hooks.config_reference()
