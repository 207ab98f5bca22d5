"""The orchestrator: sweeps on Ray Tune, the Parquet results, the analysis.

Importing the package is cheap and imports no Ray: the public helpers below load on first use.
"""
from __future__ import annotations

from typing import Any

__all__ = ["load_trial"]


def __getattr__(name: str) -> Any:
    if name == "load_trial":
        from orchestrator.trained import load_trial
        return load_trial
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
