"""A user's own Tune callbacks, named on the command line: ``--callback module:Class``.

The class is imported from the module (the current directory is on the path under
``python -m``), must subclass ``ray.tune.Callback`` and is built with no arguments -- a few lines
of the user's own subclass pass the settings (see the README's MLflow and W&B recipes). Tune
pickles callbacks with the sweep's state, so ``--resume`` brings them back.
"""
from __future__ import annotations

import importlib
import re

from ray.tune import Callback

SPEC = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<name>[A-Za-z_]\w*)$")


def load_callback(spec: str) -> Callback:
    """An instance of the Callback class ``module:Class``; ValueError (one line) otherwise."""
    match = SPEC.match(spec)
    if match is None:
        raise ValueError(f"--callback {spec!r}: expected module:Class, e.g. my_callbacks:CountResults")
    try:
        module = importlib.import_module(match["module"])
    except Exception as e:  # ImportError, or whatever the module raises while importing
        raise ValueError(f"--callback {spec}: cannot import {match['module']} "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    cls = getattr(module, match["name"], None)
    if not (isinstance(cls, type) and issubclass(cls, Callback)):
        what = "not found" if cls is None else f"is not a ray.tune.Callback subclass ({type(cls).__name__})"
        raise ValueError(f"--callback {spec}: {match['name']} in {match['module']} {what}")
    try:
        return cls()
    except Exception as e:
        raise ValueError(f"--callback {spec}: {match['name']}() failed "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
