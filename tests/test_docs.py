"""The documentation that is generated: the CLI reference from petalnet's own argparse parser, the API page
from the docstrings, the benchmark figures from benchmarks/records/; and the README's size."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from petalnet.parser import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = _load("docs/hooks/generated.py", "petalnet_docs_hook")
figures = _load("benchmarks/figures.py", "petalnet_bench_figures")
record = _load("benchmarks/record.py", "petalnet_bench_record")


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string a user may type (hidden ones, help=SUPPRESS, are left out as --help leaves them)."""
    return [s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings]


def _section(page: str, command: str) -> str:
    start = page.index(f"## `petalnet {command}`")
    end = page.find("\n## `", start + 1)
    return page[start:end if end > 0 else None]


def test_cli_page_names_every_train_option():
    parser = build_parser()
    train = _section(hook.cli_markdown(parser), "train")
    options = _options(_subparser(parser, "train"))
    assert len(options) > 40   # the training options are there to compare against
    missing = [o for o in options if f"`{o}" not in train and f", {o}" not in train]
    assert not missing


def test_cli_page_follows_the_parser_not_a_table():
    """An option added to the parser object appears on the page, under its subcommand, with its help."""
    parser = build_parser()
    _subparser(parser, "predict").add_argument("--brand-new-option", help="a help text seen nowhere else")
    page = hook.cli_markdown(parser)
    assert "`--brand-new-option BRAND_NEW_OPTION` | a help text seen nowhere else" in _section(page, "predict")
    assert "--brand-new-option" not in _section(page, "train")
    for name in ("demo", "inspect", "convert", "train", "evaluate", "predict", "serve", "export", "classes"):
        _section(page, name)


def test_cli_page_fills_the_marker_of_the_cli_reference():
    with open(os.path.join(ROOT, "docs", "cli.md"), encoding="utf-8") as f:
        page = f.read()
    assert hook.CLI_MARK in page
    assert "## `petalnet train`" in hook.on_page_markdown(page, None, None, None)


def test_api_page_documents_train_load_and_run():
    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as f:
        page = f.read()
    import petalnet
    import petalnet.api
    for name in ("train", "load", "Run"):
        assert f"::: petalnet.api.{name}\n" in page
        assert getattr(petalnet, name) is getattr(petalnet.api, name)   # what `import petalnet` gives


def _write(folder, name, **fields):
    return record.record(name, fields.pop("what", f"what {name}"), fields.pop("figure"), "img/s", folder=str(folder),
                         command="python benchmarks/bench_x.py", date="2026-12-01 10:00", machine="test machine",
                         benchmark="bench_x.py", **fields)


def test_editing_a_record_changes_the_table(tmp_path):
    for path in os.listdir(figures.RECORDS):
        shutil.copy(os.path.join(figures.RECORDS, path), tmp_path)
    before = figures.table(str(tmp_path))
    path = tmp_path / "input-vs-tfdata.json"
    row = json.loads(path.read_text())
    assert f"**{row['figure']} img/s**" in before
    row.update(figure=4321, ratio=1.55, date="2027-01-02 03:04")
    path.write_text(json.dumps(row))
    after = figures.table(str(tmp_path))
    line = next(line for line in after.splitlines() if line.startswith(f"| {row['what']} |"))
    assert "**4321 img/s**" in line and "ratio **1.55**" in line and "2027-01-02 03:04" in line
    assert len(after.splitlines()) == len(before.splitlines())


def test_a_benchmark_record_adds_or_replaces_its_row(tmp_path):
    _write(tmp_path, "bench-a", figure=100.0, peer=50.0, peer_label="peer", ratio=2.0)
    assert "| what bench-a | **100 img/s** vs 50 img/s (peer), ratio **2** |" in figures.table(str(tmp_path))
    _write(tmp_path, "bench-a", figure=120.5, detail="medians of 3")   # measured again
    table = figures.table(str(tmp_path))
    assert "**120.5 img/s**; medians of 3" in table and "**100 img/s**" not in table
    assert len(table.splitlines()) == 3
    saved = json.loads((tmp_path / "bench-a.json").read_text())
    assert set(saved) == set(record.FIELDS) and not list(tmp_path.glob("*.tmp"))


def test_blocks_fill_from_the_records_and_a_bad_record_is_named(tmp_path):
    _write(tmp_path, "accuracy-x", figure=0.9, what="Accuracy: x")
    _write(tmp_path, "serve-y", figure=80, what="Serve: y")
    text = "a\n<!-- figures:table:accuracy -->\nstale\n<!-- /figures -->\nb\n"
    filled = figures.fill(text, str(tmp_path))
    assert "Accuracy: x" in filled and "Serve: y" not in filled and "stale" not in filled
    assert figures.fill(filled, str(tmp_path)) == filled
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SystemExit, match="broken.json"):
        figures.table(str(tmp_path))


def test_readme_and_results_hold_the_current_figures():
    """README.md's headline figures and RESULTS.md's table are the records' (python benchmarks/figures.py --write)."""
    assert figures.main(["--check"]) == 0


def test_readme_fits_in_8000_characters():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert len(text) <= 8000
    assert "pip install -e . && petalnet demo" in text[:2500]   # the first screen: install and first run


@pytest.mark.slow
def test_site_builds_strict_with_the_cli_and_api_pages(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
           "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert all(o in cli for o in _options(_subparser(build_parser(), "train")))
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("petalnet.api.train", "petalnet.api.load", "petalnet.api.Run"):
        assert f'id="{name}"' in api
    bench = (tmp_path / "site" / "benchmarks" / "index.html").read_text()
    assert "Input pipeline vs tf.data" in bench and bench.count("<tr>") > 30
