"""The results schema, in one place: what a run directory holds and what its values mean.

The sink (orchestrator.results) writes it, the analysis and the report read it, the synthetic
runs of orchestrator.testing imitate it; none of them spells a file name, column, status or
mode of its own. The columns are documented in the README ("Parquet schema"). No Ray here.
"""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

# Re-exported: the core defines the modes, the trainable the metrics it reports.
from trainables.config import HARD as HARD, INDEPENDENT as INDEPENDENT, MODES as MODES
from trainables.config import SHARED_MODES as SHARED_MODES, SOFT as SOFT
from trainables.config import FEATURE as FEATURE, FEATURE_MODES as FEATURE_MODES, FEATURE_PRIVATE as FEATURE_PRIVATE
from trainables.keys import LOSS_NAMES as LOSS_NAMES, METRIC_NAMES as METRIC_NAMES

# The version this code writes; a reader accepts every version in READABLE_SCHEMA_VERSIONS.
# Version 2: timestamp a Parquet timestamp (UTC), statuses in one case (DIVERGED), hard sharing's
# alpha recorded as inf, a final flag on each trial's last rows.
# Also in version 2: trials.parquet's ``arch`` column (mlp/conv) and the modes feature and
# feature_private (version-1 runs have no arch column: they were all mlp).
# Also in version 2: metrics rows gain nn_ratio and copy_ct (the copying measures; version-1 runs lack them).
# Also in version 2: group_id in metrics and trials (the Tune trial that trained an arm, when a
# trial trains a group of arms; null in version-1 runs).
# Also in version 2: trials.parquet's ``replicate`` (which of a seed's independent baselines, 0 for
# every other trial; runs written before it have one baseline per seed: read as 0).
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)

# ------------------------------------------------------------------ a run directory's files
SWEEP_FILE = "sweep.json"          # the sweep's settings and planned trials (orchestrator.sweep)
TRIALS_FILE = "trials.parquet"     # one row per trial
METRICS_DIR = "metrics"            # one row per (trial, iteration, task), many files
# metrics/<trial_id>-<first iteration>-<last iteration>.parquet: anything else there is not ours
METRICS_FILE_NAME = re.compile(r"^(?P<trial_id>.+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$")
UNREADABLE_DIR = "metrics-unreadable"  # beside metrics/: files the sink could not read, set aside
TUNER_STATE_FILE = "tuner.pkl"     # written by Tune into every experiment directory
REPORT_DIR = "report"              # where the analysis writes by default

# ------------------------------------------------------------------ statuses

PENDING, RUNNING, TERMINATED, ERROR = "PENDING", "RUNNING", "TERMINATED", "ERROR"  # Tune's words
DIVERGED = "DIVERGED"  # the trial's loss went non-finite: ended by the trainable, not retried (v1: "diverged")
FAILED_STATUSES = (DIVERGED, ERROR)  # trials that produced no model

# ------------------------------------------------------------------ metrics and their direction
LOWER_IS_BETTER = ("fid", "kid")
HIGHER_IS_BETTER = tuple(m for m in METRIC_NAMES if m not in LOWER_IS_BETTER)


def direction(metric: str) -> float:
    """+1 if higher is better, -1 if lower is better."""
    if metric in LOWER_IS_BETTER:
        return -1.0
    if metric in HIGHER_IS_BETTER:
        return 1.0
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRIC_NAMES)}")


def better(metric: str) -> str:
    """'lower' or 'higher': the wording of "<metric> (lower is better)"."""
    return "lower" if direction(metric) < 0 else "higher"


# ------------------------------------------------------------------ Parquet schemas
METRICS_SCHEMA = pa.schema(
    [("schema_version", pa.int32()), ("sweep", pa.string()), ("trial_id", pa.string()),
     ("group_id", pa.string()), ("config_id", pa.string()), ("iteration", pa.int32()), ("step", pa.int64()),
     ("task", pa.string()),
     ("task_index", pa.int32())]
    + [(m, pa.float64()) for m in (*METRIC_NAMES, *LOSS_NAMES, "time_s")]
    + [("timestamp", pa.timestamp("us", tz="UTC")), ("final", pa.bool_())])


def metrics_as_current(table: pa.Table) -> pa.Table:
    """A metrics table of any readable version in METRICS_SCHEMA's types: version 1's float
    unix-seconds timestamp becomes a timestamp, its missing final flag false, group_id null."""
    if "group_id" not in table.column_names:
        table = table.append_column(METRICS_SCHEMA.field("group_id"), pa.nulls(table.num_rows, pa.string()))
    if "final" not in table.column_names:
        table = table.append_column("final", pa.array([False] * table.num_rows, pa.bool_()))
    if pa.types.is_floating(table.schema.field("timestamp").type):
        micros = pc.cast(pc.round(pc.multiply(table["timestamp"], 1e6)), pa.int64())
        table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp",
                                 pc.cast(micros, pa.timestamp("us", tz="UTC")))
    return table.select(METRICS_SCHEMA.names).cast(METRICS_SCHEMA)


def status_in_current_case(status: str | None) -> str | None:
    """A trials.parquet status as version 2 spells it (version 1 wrote "diverged")."""
    return status.upper() if isinstance(status, str) else status


def metrics_columns(*names: str) -> pa.Schema:
    """The part of METRICS_SCHEMA a reader asks for."""
    return pa.schema([METRICS_SCHEMA.field(name) for name in names])


def trials_schema(task_names: list[str]) -> pa.Schema:
    """trials.parquet columns (one ``lambda_/fid_/kid_<task>`` per task)."""
    f64, i64, s = pa.float64(), pa.int64(), pa.string()
    return pa.schema(
        [("schema_version", pa.int32()), ("sweep", s), ("trial_id", s), ("group_id", s), ("config_id", s),
         ("baseline_key", s),
         ("status", s), ("seed", i64), ("replicate", i64), ("mode", s), ("alpha", f64)]
        + [(f"lambda_{t}", f64) for t in task_names]
        + [("data", s), ("samples_per_task", i64), ("width", i64), ("z_dim", i64), ("arch", s), ("lr", f64),
           ("batch_size", i64), ("gan_loss", s), ("eval_samples", i64), ("steps_per_iteration", i64),
           ("iterations", i64), ("iterations_planned", i64)]
        + [(f"{m}_{t}", f64) for t in task_names for m in ("fid", "kid")]
        + [("fid_mean", f64), ("kid_mean", f64), ("node_ip", s), ("hostname", s), ("device", s),
           ("cpus", f64), ("gpus", f64), ("time_s", f64), ("checkpoint_path", s), ("samples_path", s),
           ("error", s)])


# ------------------------------------------------------------------ where a run lives
def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def location_name(location: str | os.PathLike) -> str:
    """The last component of a path or URI (a sweep's name for a run directory)."""
    return str(location).partition("?")[0].rstrip("/").rsplit("/", 1)[-1]


def with_query(uri: str, query: str) -> str:
    """``uri`` with pyarrow's query options (``endpoint_override=...&scheme=http``) appended,
    unless it is a plain path or carries options of its own."""
    return f"{uri}?{query}" if query and is_uri(uri) and "?" not in uri else uri


class RunLocation:
    """A directory on the local disk or behind a URI (s3://, gs://, file://) -- Tune's storage
    may be either. Local writes go to a hidden temporary name and are renamed into place; an
    object store's upload appears whole anyway. A URI may carry pyarrow's query options
    (``s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http``); they stay at its end.
    The constructor raises OSError/ValueError for a URI pyarrow cannot open."""

    def __init__(self, location: str | os.PathLike) -> None:
        if is_uri(location):
            base, mark, query = str(location).partition("?")
            self.location = base.rstrip("/") + mark + query
            self.query = query
            self.fs, self.path = pafs.FileSystem.from_uri(self.location)
        else:
            self.location = self.path = str(Path(location).resolve())
            self.query = ""
            self.fs = pafs.LocalFileSystem()
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def __reduce__(self):
        return (type(self), (self.location,))

    def __str__(self) -> str:
        return self.location

    @property
    def name(self) -> str:
        return location_name(self.location)

    def sub(self, *parts: str) -> str:
        """A path inside the location, as ``self.fs`` names it."""
        return "/".join([self.path.rstrip("/"), *parts])

    def uri(self, *parts: str) -> str:
        """Where a file is, as the user would name it (a path, or a URI with its query kept last)."""
        base, mark, query = self.location.partition("?") if is_uri(self.location) else (self.location, "", "")
        return "/".join([base, *parts]) + mark + query

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.sub(*parts)).type != pafs.FileType.NotFound

    def is_file(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.sub(*parts)).is_file

    def is_dir(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.sub(*parts)).type == pafs.FileType.Directory

    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.sub(*parts), recursive=True)

    def read_text(self, *parts: str) -> str:
        with self.fs.open_input_stream(self.sub(*parts)) as f:
            return f.read().decode()

    def write_text(self, text: str, *parts: str) -> None:
        with self.fs.open_output_stream(self.sub(*parts)) as f:
            f.write(text.encode())

    def read_table(self, *parts: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.sub(*parts), filesystem=self.fs, columns=columns)

    def write_table(self, table: pa.Table, *parts: str) -> None:
        path = self.sub(*parts)
        if not self.local:
            pq.write_table(table, path, filesystem=self.fs)
            return
        # Hidden and not ending in .parquet: a reader's glob (DuckDB, Polars: *.parquet matches
        # hidden names) never lists a file still being written.
        tmp = f"{path.rsplit('/', 1)[0]}/.tmp-{uuid.uuid4().hex}-{parts[-1]}.partial"
        pq.write_table(table, tmp, filesystem=self.fs)
        os.replace(tmp, path)

    def delete(self, *parts: str) -> None:
        self.fs.delete_file(self.sub(*parts))

    def delete_temporaries(self, *parts: str) -> None:
        """Remove the ``.tmp-*`` files of writes that never reached their rename."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.sub(*parts), allow_not_found=True))
        for info in infos:
            if info.is_file and info.base_name.startswith(".tmp-"):
                self.fs.delete_file(info.path)

    def subdirectories(self, *parts: str) -> list[str]:
        """Names of the directories inside, sorted."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.sub(*parts)))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def parquet_files(self, *parts: str) -> list[str]:
        """Parquet files in a directory, without the hidden/temporary ones readers skip."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.sub(*parts), allow_not_found=True))
        return [i.path for i in infos if i.is_file and i.base_name.endswith(".parquet")
                and i.base_name[0] not in "._"]


def is_run_directory(location: RunLocation, *parts: str) -> bool:
    """Whether a directory holds a sweep's results (trials.parquet and metrics/)."""
    return location.is_file(*parts, TRIALS_FILE) and location.is_dir(*parts, METRICS_DIR)
