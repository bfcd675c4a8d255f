"""The command-line vocabulary: docs/CLI.md matches the parsers, every flag says its default, help is fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from unimedvl import cli
from unimedvl.cli_docs import documented_actions, render, subparser

DOCS = Path(__file__).resolve().parents[1] / "docs" / "CLI.md"
COMMANDS = list(cli.COMMANDS)


def test_docs_cli_md_is_generated_from_the_parsers():
    assert DOCS.is_file(), "docs/CLI.md is missing: run `make docs`"
    assert DOCS.read_text(encoding="utf-8") == render(), "docs/CLI.md is stale: run `make docs` and commit it"


def test_the_reference_check_catches_a_new_flag(monkeypatch):
    before = render()
    original = cli.build_parser

    def with_extra_flag(only=None):
        parser = original(only)
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        if "info" in sub.choices:
            sub.choices["info"].add_argument("--brand-new-flag", type=int, default=3, help="something new")
        return parser

    monkeypatch.setattr("unimedvl.cli_docs.build_parser", with_extra_flag)
    assert render() != before and "--brand-new-flag" in render()


@pytest.mark.parametrize("name", COMMANDS)
def test_every_flag_says_what_it_does_and_its_default(name):
    parser = subparser(name)
    formatter = parser._get_formatter()
    bad = []
    for action in documented_actions(parser):
        text = formatter._expand_help(action) if action.help else ""
        if not text.strip():
            bad.append(f"{'/'.join(action.option_strings) or action.dest}: no help text")
        elif action.option_strings and action.nargs != 0 and not action.required and "default" not in text:
            bad.append(f"{'/'.join(action.option_strings)}: help does not say the default")
        if "spec " in text or "section " in text:
            bad.append(f"{'/'.join(action.option_strings) or action.dest}: cites a document the user does not have")
    assert bad == []


def test_help_does_not_import_torch_or_gradio():
    # `unimedvl COMMAND --help` must be instant: no heavy import happens before the arguments are parsed.
    code = (
        "import sys\nfrom unimedvl.cli import main\n"
        f"for name in {COMMANDS!r}:\n"
        "    try:\n        main([name, '--help'])\n    except SystemExit:\n        pass\n"
        "heavy = [m for m in ('torch', 'gradio', 'fastapi', 'transformers') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"
