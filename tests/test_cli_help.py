"""Every command's --help, and the plain-PyTorch command's refusals of bad input."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from trainables.__main__ import main as trainables_main

COMMANDS = ["trainables", "orchestrator.sweep", "orchestrator.analyze", "orchestrator.cluster"]


@pytest.mark.parametrize("module", COMMANDS)
def test_help_describes_every_flag(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps lines
    assert text.startswith(f"usage: python -m {module}")
    description = done.stdout.split("\n\n")[1]
    assert len(description.split()) >= 10, "a description, not just the usage line"
    parser = importlib.import_module(module + ".__main__" if module == "trainables" else module).build_parser()
    for action in parser._actions:
        assert action.help and action.help != argparse.SUPPRESS, f"{action.option_strings} has no help text"
        assert " ".join(action.help.split()).split("%(")[0] in text
        if action.default not in (None, False, argparse.SUPPRESS) and action.dest != "help":
            assert "default" in action.help, f"{action.option_strings} does not show its default"


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--every", "-1"], "--every must be >= 1"),
    (["--alpha", "-1"], "alpha must be a finite number >= 0"),
    (["--mode", "shared"], "invalid choice: 'shared'"),
    (["--steps", "many"], "invalid int value: 'many'"),
    (["--data", "nope"], "unknown kind 'nope'"),
    (["--out", "/nonexistent-dir/x.png"], "is not a writable directory"),
])
def test_trainables_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert trainables_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], captured.err
