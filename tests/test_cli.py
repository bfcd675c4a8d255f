import subprocess
import sys

from unimedvl.cli import COMMANDS, main


def test_help_lists_subcommands(capsys):
    out = subprocess.run([sys.executable, "-m", "unimedvl.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in COMMANDS:
        assert name in out.stdout


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "info" in capsys.readouterr().out


def test_info_reports_sizes_without_allocating(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "sdpa" in out
    line = next(l for l in out.splitlines() if l.strip().startswith("bagel-7b-mot"))
    total = float(line.split()[1].rstrip("B"))
    assert 14.5 <= total <= 14.8  # ~14.6B counted on the meta device
    assert any(l.strip().startswith("debug") for l in out.splitlines())


def test_user_errors_are_one_line(capsys):
    assert main(["init-checkpoint", "--size", "nope", "--out", "/tmp/unused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown model size")


def test_every_subcommand_is_one_commands_module_with_register_and_run():
    # One pattern: `unimedvl NAME` is unimedvl.commands.<NAME, dashes as underscores>, whose
    # register(subparsers) adds the parser with func=run, and run(args) returns the exit status.
    import importlib

    from unimedvl.cli import build_parser

    for name, (module_name, _) in COMMANDS.items():
        assert module_name == "unimedvl.commands." + name.replace("-", "_"), name
        module = importlib.import_module(module_name)
        parser = build_parser(only=name)
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        assert sub.choices[name].get_default("func") is module.run, name


def test_no_library_package_builds_a_subcommand():
    # Parsers of subcommands live in unimedvl.commands only: nothing else calls add_parser or defines register().
    import ast
    from pathlib import Path

    import unimedvl

    root = Path(unimedvl.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.parent.name == "commands" or path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "add_parser":
                found.append(f"{path.relative_to(root)}:{node.lineno}: add_parser")
            elif (
                isinstance(node, ast.FunctionDef)
                and node.name.startswith("register")
                and any(a.arg == "subparsers" for a in node.args.args)
            ):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.name}(subparsers)")
    assert found == []
