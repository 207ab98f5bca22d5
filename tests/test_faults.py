"""Fault injection: planted pickles, hostile files and inputs, killed, raced and moved sweeps.

Each test plants, corrupts or races something a user (or whoever else can write the storage)
could, and asserts what the user relies on: nothing planted runs, nothing is lost or mixed, and
every failure is one line.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from trainables.tune_trainable import UntrustedCheckpointError, load_state


class _PlantedCommand:
    """Unpickling this runs ``touch MARKER``: the marker's existence proves code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_in_a_checkpoint_is_refused_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    planted = tmp_path / "state.pt"
    torch.save({"config": {}, "G": _PlantedCommand(marker)}, planted)
    with pytest.raises(UntrustedCheckpointError) as error:
        load_state(planted, "cpu")
    assert not marker.exists(), "the planted pickle ran"
    message = str(error.value)
    assert "\n" not in message and str(planted) in message and "posix.system" in message

    empty = tmp_path / "empty.pt"  # what a full disk leaves behind
    empty.write_bytes(b"")
    with pytest.raises(UntrustedCheckpointError, match="empty.pt: refused to load"):
        load_state(empty, "cpu")
