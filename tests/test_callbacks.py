"""--callback module:Class: a user's Tune callback is imported, checked and built, or refused in one line."""
from __future__ import annotations

import pytest
from ray.tune import Callback

from orchestrator.callbacks import load_callback

MODULE = """
from ray.tune import Callback

class Counter(Callback):
    pass

class NeedsArgs(Callback):
    def __init__(self, uri):
        self.uri = uri

class NotACallback:
    pass
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_callbacks_mod.py").write_text(MODULE)
    (tmp_path / "broken_callbacks_mod.py").write_text("import no_such_package_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_callbacks_mod"


def test_a_callback_class_is_built(user_module):
    callback = load_callback(f"{user_module}:Counter")
    assert isinstance(callback, Callback) and type(callback).__name__ == "Counter"


@pytest.mark.parametrize("spec, message", [
    ("my_callbacks_mod.Counter", "expected module:Class"),
    ("no_such_module_xyz:Counter", "cannot import no_such_module_xyz (ModuleNotFoundError"),
    ("broken_callbacks_mod:Counter",
     "cannot import broken_callbacks_mod (ModuleNotFoundError: No module named 'no_such_package_xyz')"),
    ("my_callbacks_mod:Missing", "Missing in my_callbacks_mod not found"),
    ("my_callbacks_mod:NotACallback", "is not a ray.tune.Callback subclass"),
    ("my_callbacks_mod:NeedsArgs", "NeedsArgs() failed (TypeError"),
])
def test_bad_callbacks_are_one_line(user_module, spec, message):
    with pytest.raises(ValueError) as err:
        load_callback(spec)
    assert message in str(err.value) and "\n" not in str(err.value)
