"""Provenance: the command re-runs as typed, the git state is the work tree's, versions are real."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata

from orchestrator.provenance import command_line, git_state, package_versions, provenance


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_command_is_this_interpreter_and_quotes_what_a_shell_would_split(tmp_path):
    argv = ["--name", "my run", "--storage", str(tmp_path / "a b"), "--seeds", "0,1"]
    command = command_line("orchestrator.sweep", argv)
    assert shlex.split(command) == [sys.executable, "-m", "orchestrator.sweep", *argv]
    # as typed: the real command line of a process, interpreter and -m included
    code = "from orchestrator.provenance import command_line; print(command_line('x'))"
    done = subprocess.run([sys.executable, "-c", code, "arg with space"], capture_output=True, text=True, check=True)
    assert shlex.split(done.stdout.strip()) == [sys.executable, "-c", code, "arg with space"]


def test_git_state_commit_and_dirty_flag(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_state(repo) == {"commit": sha, "dirty": False}
    (repo / "a.py").write_text("x = 2\n")
    assert git_state(repo) == {"commit": sha, "dirty": True}
    outside = tmp_path / "outside"
    outside.mkdir()
    assert git_state(outside) is None


def test_provenance_is_json_with_versions_host_and_utc_start(tmp_path):
    record = json.loads(json.dumps(provenance("orchestrator.sweep", ["--space", "smoke"], source_dir=tmp_path)))
    assert record["git"] is None  # not a work tree
    assert record["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    for name in ("torch", "ray", "numpy", "pyarrow"):
        assert record["versions"][name] == metadata.version(name)
    assert package_versions(("no-such-package-xyz",))["no-such-package-xyz"] is None
    assert record["host"] and record["python"] == sys.executable
    started = datetime.fromisoformat(record["started_utc"].replace("Z", "+00:00"))
    assert started.tzinfo is not None and abs((datetime.now(timezone.utc) - started).total_seconds()) < 60
