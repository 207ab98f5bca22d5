"""What every command line of the project shares: bad input is one ``error: ...`` line on
stderr and exit code 2 (not argparse's usage block). Lowest layer, so that the trainables',
sweep's and analysis' CLIs all import it from here."""
from __future__ import annotations

import argparse
from typing import NoReturn


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2, before any work starts."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors raise UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)
