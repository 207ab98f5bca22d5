"""One driver per run: a lock held for as long as a sweep's driver runs.

Local storage: ``RUN/.driver.lock``, an exclusive ``flock`` on a file that also names the holder
(host, pid, start time). The kernel drops the lock when its process dies however it dies, so a
lock left by a killed driver is stale by construction: the file is still there, unlocked, and the
next driver takes it (the old holder is named in a note).

Object store (s3://): a lease object ``RUN/.driver-lease.json`` created with a conditional PUT
(``If-None-Match: *``: of two drivers exactly one creates it), renewed by a heartbeat thread with
``If-Match`` on its ETag, and taken over only when its stated expiry has passed (again with
``If-Match``, so of two drivers taking over a stale lease one wins). pyarrow's filesystem has no
conditional writes, so this uses boto3 (installed on the cluster's head; without it the run is
not locked and a warning says so).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

LOCK_FILE = ".driver.lock"
LEASE_FILE = ".driver-lease.json"
LEASE_TTL_S = 60.0


class RunLocked(Exception):
    """Another driver holds the run (one line naming it)."""


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


def _describe(holder: dict) -> str:
    since = holder.get("since")
    age = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if since else ""
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}{age}"


class LocalRunLock:
    """flock-based lock in a local run directory (created if missing)."""

    def __init__(self, run_dir: str | Path, name: str) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.name = name
        self._fd: int | None = None
        self._created: list[Path] = []
        self._created_file = False

    def acquire(self) -> None:
        self._created = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self._created_file = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_json(os.pread(fd, 4096, 0))
            os.close(fd)
            raise RunLocked(f"sweep {self.name!r} is being run by another driver ({_describe(holder)}); "
                            f"wait for it to end, or stop it, before running or resuming it") from None
        except OSError:
            os.close(fd)
            raise
        previous = _read_json(os.pread(fd, 4096, 0))
        if previous.get("pid") is not None:
            print(f"note: sweep {self.name!r}: a driver that did not end cleanly held it "
                  f"({_describe(previous)}); taking over", file=sys.stderr, flush=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        self._fd = fd

    def release(self, discard: bool = False) -> None:
        """Unlock; ``discard``: the driver wrote nothing -- remove what acquire created."""
        if self._fd is None:
            return
        if discard:
            for path in ([self.path] if self._created_file else []):
                path.unlink(missing_ok=True)
            for directory in self._created:  # innermost first
                try:
                    directory.rmdir()
                except OSError:
                    break
        try:
            os.ftruncate(self._fd, 0)  # an empty lock file: the last driver ended cleanly
        except OSError:
            pass  # e.g. disk full: the unlocked file is stale by construction anyway
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _read_json(data: bytes) -> dict:
    try:
        value = json.loads(data.decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def s3_client_for(location: str):
    """(boto3 S3 client, bucket, key prefix) for an s3:// run URI with pyarrow's query options."""
    import boto3

    parts = urlsplit(location)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    kwargs = {}
    if "endpoint_override" in options:
        scheme = options.get("scheme", "https")
        endpoint = options["endpoint_override"]
        kwargs["endpoint_url"] = endpoint if "://" in endpoint else f"{scheme}://{endpoint}"
    if "region" in options:
        kwargs["region_name"] = options["region"]
    return boto3.client("s3", **kwargs), parts.netloc, parts.path.strip("/")


class S3RunLock:
    """Lease-object lock in an s3:// run prefix."""

    def __init__(self, location: str, name: str, ttl_s: float = LEASE_TTL_S, client=None) -> None:
        self.name, self.ttl_s = name, ttl_s
        client_, self.bucket, prefix = s3_client_for(location) if client is None else (client, *_split(location))
        self.client = client_
        self.key = f"{prefix}/{LEASE_FILE}" if prefix else LEASE_FILE
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def _body(self) -> bytes:
        return json.dumps({**_holder(), "expires": time.time() + self.ttl_s}).encode()

    def _put(self, **condition) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(), **condition)["ETag"]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return None
            raise

    def acquire(self) -> None:
        from botocore.exceptions import ClientError

        etag = self._put(IfNoneMatch="*")
        if etag is None:
            try:
                current = self.client.get_object(Bucket=self.bucket, Key=self.key)
                holder, current_etag = _read_json(current["Body"].read()), current["ETag"]
            except ClientError:  # released meanwhile: try once more from scratch
                holder, current_etag = {}, None
            if current_etag is None:
                etag = self._put(IfNoneMatch="*")
            elif float(holder.get("expires", 0)) < time.time():
                etag = self._put(IfMatch=current_etag)
                if etag is not None:
                    print(f"note: sweep {self.name!r}: the lease of a driver that stopped renewing it "
                          f"({_describe(holder)}) has expired; taking over", file=sys.stderr, flush=True)
            if etag is None:
                raise RunLocked(f"sweep {self.name!r} is being run by another driver ({_describe(holder)}; "
                                f"its lease s3://{self.bucket}/{self.key} is renewed every "
                                f"{self.ttl_s / 3:.0f} s); wait for it to end, or stop it, before running "
                                f"or resuming it")
        self._etag = etag
        self._thread = threading.Thread(target=self._renew, name="run-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                etag = self._put(IfMatch=self._etag)
            except Exception:  # a network hiccup: the lease still has 2/3 of its time
                continue
            if etag is None:
                self.lost = True
                print(f"error: sweep {self.name!r}: another driver took over this run's lease; "
                      f"stop this driver", file=sys.stderr, flush=True)
                return
            self._etag = etag

    def release(self, discard: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._etag is not None and not self.lost:
            try:
                current = self.client.head_object(Bucket=self.bucket, Key=self.key)
                if current["ETag"] == self._etag:
                    self.client.delete_object(Bucket=self.bucket, Key=self.key)
            except Exception:
                pass  # an unreleased lease expires by itself
        self._etag = None


def _split(location: str) -> tuple[str, str]:
    parts = urlsplit(location)
    return parts.netloc, parts.path.strip("/")


def run_lock(location: str, name: str, local: bool):
    """The lock for a run at ``location`` (a local path, or a URI)."""
    if local:
        return LocalRunLock(location, name)
    if location.startswith("s3://"):
        return S3RunLock(location, name)
    return None
