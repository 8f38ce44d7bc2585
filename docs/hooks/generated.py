"""MkDocs hook (mkdocs.yml ``hooks:``): the pages made from the code at build time.

- ``<!-- petalnet:cli -->`` in a page becomes the command-line reference, walked from the argparse parser that
  ``petalnet`` itself builds (``petalnet.parser.build_parser``): every subcommand, every option group and option
  with its help, so a new option appears without editing a page.
- ``<!-- figures:table -->...<!-- /figures -->`` (and ``figures:headline``) become the figures generated from
  benchmarks/records/ by benchmarks/figures.py.
"""
from __future__ import annotations

import argparse
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI_MARK = "<!-- petalnet:cli -->"


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def _subcommands(parser: argparse.ArgumentParser):
    """(name, one-line help, parser) of each subcommand, in the order ``petalnet --help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name) or "", sub


def _option_rows(parser: argparse.ArgumentParser, group) -> list[str]:
    fmt = parser._get_formatter()
    rows = []
    for action in group._group_actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        invocation = fmt._format_action_invocation(action)
        help_ = fmt._expand_help(action) if action.help else ""
        if action.choices and not isinstance(action.choices, dict) and "{" not in invocation:
            help_ += f" Choices: {', '.join(map(str, action.choices))}."
        default = action.default
        if action.option_strings and default not in (None, False, argparse.SUPPRESS) and \
                "default" not in help_ and action.nargs != 0:
            help_ += f" (default: {default})"
        rows.append(f"| `{_cell(invocation)}` | {_cell(help_)} |")
    return rows


def _command_markdown(prog: str, helptext: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    lines = [f"{'#' * level} `{prog}`", ""]
    if helptext:
        lines += [helptext[0].upper() + helptext[1:] + ("" if helptext.endswith(".") else "."), ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    if parser.description:
        lines += [" ".join(parser.description.split()), ""]
    for group in parser._action_groups:
        rows = _option_rows(parser, group)
        if rows:
            title = group.title[0].upper() + group.title[1:]
            lines += [f"**{title}**", "", "| option | what |", "| --- | --- |", *rows, ""]
    return lines


def cli_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """The CLI reference in markdown: the top-level command, then each subcommand with its options."""
    if parser is None:
        from petalnet.parser import build_parser
        parser = build_parser()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"   # argparse wraps usage to the terminal's width: the page's is fixed
    try:
        lines = _command_markdown(parser.prog, "", parser, 2)
        for name, helptext, sub in _subcommands(parser):
            lines += _command_markdown(f"{parser.prog} {name}", helptext, sub, 2)
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(lines)


def _figures():
    spec = importlib.util.spec_from_file_location("petalnet_bench_figures", os.path.join(ROOT, "benchmarks",
                                                                                       "figures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CLI_MARK in markdown:
        markdown = markdown.replace(CLI_MARK, cli_markdown())
    if "<!-- figures:" in markdown:
        markdown = _figures().fill(markdown)
    return markdown
