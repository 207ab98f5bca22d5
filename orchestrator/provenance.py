"""Where a run came from: the command as typed, the code's git commit, package versions, host
and start time. Pure standard library (no Ray, no torch import), cheap enough to call at the
start of every sweep; recorded in sweep.json."""
from __future__ import annotations

import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("mtgan-sweep", "torch", "ray", "numpy", "pyarrow", "pandas")
GIT_TIMEOUT_S = 5.0
SOURCE_DIR = Path(__file__).resolve().parent  # the code that runs, wherever the shell was


def command_line(module: str, argv: list[str] | None = None) -> str:
    """The command, quoted so that it can be pasted into a shell.

    ``argv`` None: this process' command line as typed (interpreter included). Otherwise the
    command a shell would need to do what ``main(argv)`` was called with: this interpreter,
    ``-m module`` and argv."""
    if argv is None:
        return shlex.join(sys.orig_argv)
    return shlex.join([sys.executable, "-m", module, *argv])


def git_state(directory: str | Path = SOURCE_DIR) -> dict[str, Any] | None:
    """{"commit": sha, "dirty": bool} of the git work tree holding ``directory``; None where
    there is none (an installed package) or git is missing. Dirty: tracked changes or new
    files git does not ignore."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True,
                              check=True, timeout=GIT_TIMEOUT_S).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions (from package metadata, nothing imported); None where not installed."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(module: str, argv: list[str] | None = None, source_dir: str | Path = SOURCE_DIR) -> dict[str, Any]:
    """Everything above, as one JSON-able dict."""
    return {
        "command": command_line(module, argv),
        "python": sys.executable,
        "cwd": str(Path.cwd()),
        "git": git_state(source_dir),
        "versions": package_versions(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
