"""The command-line reference (docs/CLI.md), generated from the parsers themselves.

``python -m unimedvl.cli_docs > docs/CLI.md`` (``make docs``) rewrites it; a test fails when a
flag was added or changed without regenerating, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import sys

from unimedvl.cli import COMMANDS, build_parser

HEADER = """# Command-line reference

Generated from the parsers by `python -m unimedvl.cli_docs > docs/CLI.md` (`make docs`); do not edit by
hand. `unimedvl COMMAND --help` prints the same. Flags marked "required" have no default; a blank
default means the flag is off unless given, or that its help says what happens without it.
"""


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser(only=name)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def documented_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's flags and arguments a user sees (not --help, not hidden deprecated spellings)."""
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction) and a.help is not argparse.SUPPRESS]


def subparser(name: str) -> argparse.ArgumentParser:
    """The parser of ``unimedvl NAME`` as the command line builds it."""
    return _subparser(name)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    value = action.default
    if value is None or value is False or value is argparse.SUPPRESS:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or ""
    return f"`{value}`"


def _flags(action: argparse.Action) -> str:
    names = " ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
    if action.option_strings and action.nargs != 0:
        metavar = action.metavar or (
            f"{{{','.join(map(str, action.choices))}}}" if action.choices else action.dest.upper()
        )
        if isinstance(metavar, tuple):
            metavar = " ".join(metavar)
        names += f" {metavar}"
    return names


def command_table(name: str) -> str:
    """The Markdown section of one command: its help line, usage and a table of every flag."""
    parser = _subparser(name)
    formatter = parser._get_formatter()
    lines = [f"## `unimedvl {name}`", "", COMMANDS[name][1], ""]
    lines += ["| flag | default | what it does |", "| --- | --- | --- |"]
    for action in documented_actions(parser):
        help_text = formatter._expand_help(action) if action.help else ""
        lines.append(f"| {_cell(_flags(action))} | {_cell(_default(action))} | {_cell(help_text)} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    """docs/CLI.md as it must be."""
    index = "\n".join(f"- [`{name}`](#unimedvl-{name}): {help_text}" for name, (_, help_text) in COMMANDS.items())
    sections = "\n".join(command_table(name) for name in COMMANDS)
    return f"{HEADER}\n{index}\n\n{sections}"


if __name__ == "__main__":
    sys.stdout.write(render())
