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
