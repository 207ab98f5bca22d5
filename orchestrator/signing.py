"""HMAC signatures for the pickled state Tune keeps in a run's storage.

``Tuner.restore`` unpickles ``tuner.pkl``, the experiment state (JSON holding cloudpickled
parts), the searcher's and the callbacks' state: whoever can write the storage (a shared bucket)
could plant a pickle that runs code in the driver at ``--resume``. So the driver signs every such
file it writes with a key that never leaves this user's machine (``~/.config/mtgan-sweep/
signing.key``, mode 0600, created on first use), and ``--resume`` refuses any that does not carry
a valid signature, before anything is unpickled.

Signatures live in the run as JSON: ``{file name: [hex HMAC-SHA256 of name + content, ...]}``,
the last few versions of each file (an interrupted upload may leave an older version in place).
A MAC can only be made with the key, so the file itself needs no protection: an attacker can
delete it (then ``--resume`` refuses) but not extend it.
"""
from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

KEY_ENV = "MTGAN_SIGNING_KEY_FILE"  # overrides the key's location (tests, several identities)
KEY_BYTES = 32
VERSIONS_KEPT = 8
# Files in a run's root that Tune unpickles on restore (tuner.pkl, experiment_state-*.json with
# cloudpickled parts, basic-variant / searcher / callback state).
TUNE_STATE_PATTERNS = ("tuner.pkl", "experiment_state-*.json", "*-state-*.json", "*-state-*.pkl",
                       "*.pkl")


class SignatureError(Exception):
    """A file Tune would unpickle is not signed by this user's key (one line)."""


def key_path() -> Path:
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "mtgan-sweep" / "signing.key"


def load_key(create: bool = True) -> bytes:
    """This user's signing key; created (0600, in a 0700 directory) when missing and ``create``.

    Raises SignatureError for a key others can read or write (it would sign nothing then)."""
    path = key_path()
    if not path.exists():
        if not create:
            raise SignatureError(f"no signing key at {path}: this user never ran a sweep here")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another driver created it meanwhile: use theirs
            return load_key(create=False)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SignatureError(f"signing key {path} is accessible to others (mode {mode & 0o777:o}); "
                             f"chmod 600 {path}")
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise SignatureError(f"signing key {path} is truncated ({len(key)} bytes); delete it to make a new one "
                             f"(runs signed with the old key can then no longer be resumed)")
    return key


def mac(key: bytes, name: str, content: bytes) -> str:
    """HMAC-SHA256 of a file's name and content (the name binds a signature to its file)."""
    return hmac.new(key, name.encode() + b"\0" + content, hashlib.sha256).hexdigest()


def is_tune_state(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in TUNE_STATE_PATTERNS)


class Signatures:
    """The MACs of the recent versions of each signed file."""

    def __init__(self, entries: dict[str, list[str]] | None = None) -> None:
        self.entries: dict[str, list[str]] = {k: list(v) for k, v in (entries or {}).items()}

    @classmethod
    def loads(cls, text: str | None) -> Signatures:
        if not text:
            return cls()
        try:
            raw = json.loads(text)
        except ValueError:
            return cls()  # unreadable: nothing verifies, so a resume refuses
        if not isinstance(raw, dict):
            return cls()
        return cls({str(k): [str(m) for m in v] for k, v in raw.items() if isinstance(v, list)})

    def dumps(self) -> str:
        return json.dumps(self.entries, indent=1, sort_keys=True)

    def add(self, key: bytes, name: str, content: bytes) -> None:
        digest = mac(key, name, content)
        versions = [m for m in self.entries.get(name, []) if m != digest] + [digest]
        self.entries[name] = versions[-VERSIONS_KEPT:]

    def verify(self, key: bytes, name: str, content: bytes) -> bool:
        digest = mac(key, name, content)
        return any(hmac.compare_digest(digest, known) for known in self.entries.get(name, []))

    def merge(self, other: Signatures) -> None:
        for name, versions in other.entries.items():
            mine = self.entries.get(name, [])
            self.entries[name] = (mine + [m for m in versions if m not in mine])[-VERSIONS_KEPT:]


def sign_directory(key: bytes, directory: Path, signatures: Signatures) -> Signatures:
    """Add the current version of every Tune state file in ``directory`` (a local path)."""
    for path in sorted(Path(directory).iterdir()):
        if path.is_file() and is_tune_state(path.name):
            signatures.add(key, path.name, path.read_bytes())
    return signatures


def unsigned_files(key: bytes, contents: dict[str, bytes], signatures: Signatures) -> list[str]:
    """Names among ``contents`` (Tune state files by name -> bytes) with no valid signature."""
    return sorted(name for name, content in contents.items()
                  if is_tune_state(name) and not signatures.verify(key, name, content))
