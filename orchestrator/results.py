"""The Parquet sink: a Tune callback on the driver that streams results into ``<run dir>/``.

Layout and columns are those of orchestrator.schema (documented in the README):
``metrics/<trial_id>-<first_iter>-<last_iter>.parquet`` (one row per trial, iteration, task)
and ``trials.parquet`` (one row per trial). Every local file is written as ``.tmp-*.partial``
and renamed (an object store's upload appears whole anyway), so a reader (pandas,
pyarrow.dataset, DuckDB) sees whole files only, while the sweep runs.

Durability: a result's rows are kept in memory until Tune next saves its experiment state, and
written then -- from ``get_state``, which Tune calls while saving, after writing the state to
the driver's local staging directory and before uploading it to the storage. So no experiment
state in the storage can name a checkpoint whose rows are not there: a resumed trial restarts
from that checkpoint and never reports its iteration again, so a lost row would be lost for
good, while rows of later, unsaved iterations are reported again by the resumed trial. Rows are
also written when their trial ends. This costs one write per trial per state save (Tune saves
every few seconds) instead of one per result: on an object store, one PUT per result was the
limit (a few results/s).

While trials run, metrics files only ever appear: none is replaced or deleted, because DuckDB
and Polars fail on a file removed between their glob's listing and their opening it, and Polars
2.1 also on a path replaced while it reads (it opens the path more than once: 46 of 156 reads
of a file replaced in a loop failed; DuckDB's none). So a ``metrics/*.parquet`` glob never
sees a row twice, never a partial file (temporaries end in ``.partial``) and never errs while
the trials run. When the sweep ends, compaction brings the file count to one per trial: each
trial's files (and rows still in memory) become one ``<trial_id>-<first>-<last>.parquet``. On a
local disk the new metrics/ is built beside it in ``.metrics-compacting/`` (merged files, hard
links to the files that stay) and the two directories are swapped by one atomic rename
(renameat2 RENAME_EXCHANGE), so a glob lists the parts or the merged files, never both; a read
whose listing came just before the swap can fail to open a part (read again). If the driver
dies meanwhile, ``setup()`` removes the half-built (or swapped-out) directory. Elsewhere (an
object store) each trial's merged file is written, then its parts deleted: a reader at that
moment may see rows twice or miss a part, so read again after the sweep's summary; if the
driver dies inside it, ``setup()`` repairs the run on resume: a file whose iteration range lies
inside another file of the same trial, with all its rows there, is deleted.

Rows are never duplicated: at setup -- a fresh start, a ``--resume``, or a restored Tuner --
the (trial_id, iteration) pairs already on disk are read and skipped when reported again (a
trial restarted from a checkpoint replays at most the iterations after that checkpoint). A
metrics file that cannot be read (truncated, not Parquet) is moved to ``metrics-unreadable/``
with one line naming it and the rows it held; files not named like the sink's are left alone
with a warning.

trials.parquet is a summary that lags the trials by at most ``flush_seconds`` (more where
rewriting it would take over 5% of the driver's time) and is complete when the sweep ends;
status changes are applied in memory, and on resume from Tune's own restored trial states. The
table last written is kept, and only the rows changed since are converted from Python (what
cost time: ~60 us a row); the rest of a rewrite (filter, sort, encode) is Arrow's C++ work,
O(trials) but ~20 ms for 5,000 trials. It is replaced whole (atomic
rename), which pandas, pyarrow and DuckDB always read consistently; a Polars read that overlaps
a replacement may fail (see above): read it again.

The callback pickles as its constructor arguments, less the run directory (``__reduce__``):
Tune stores the RunConfig, callbacks included, in tuner.pkl and ``Tuner.restore`` (which takes
no callbacks argument in Ray 2.60) brings them back from there; the driver then tells each
restored sink where the run is now (``relocate``), so a run moved to other storage is written
there and nothing pickled names a path.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.tune import Callback

import search_spaces as ss
from orchestrator.schema import (DIVERGED, ERROR, FAILED_STATUSES, HARD, LOSS_NAMES, METRICS_DIR,
                                 METRICS_FILE_NAME, METRICS_SCHEMA, METRIC_NAMES, PENDING, RUNNING,
                                 SCHEMA_VERSION, TERMINATED, TRIALS_FILE, UNREADABLE_DIR, RunLocation,
                                 metrics_as_current, trials_schema, with_query)
from trainables.config import GANConfig
from trainables.keys import ORCHESTRATOR_KEYS
from trainables.tune_trainable import arm_trial_id, gan_config_dict, samples_file, trial_of



def canonical_trial(config: dict[str, Any]) -> dict[str, Any]:
    """The trial as it ran (λ normalised as the trainable does), with config_id/baseline_key."""
    trial = trial_of(config)
    gan = gan_config_dict(trial)
    if gan.get("lambdas") is not None:
        gan["lambdas"] = list(gan["lambdas"])
    plain = {**gan, **{k: trial[k] for k in ORCHESTRATOR_KEYS if k in trial and k not in ("config_id", "baseline_key")}}
    return ss.with_identity(plain)


class Arm(NamedTuple):
    """One arm of a Tune trial: the trial itself, or one arm of a trial that trains a group of
    arms (``{"arms": [...]}``), whose rows carry ``trial_id`` ``<group>-a<k>`` and ``group_id``."""
    trial_id: str
    config: dict[str, Any]
    group_id: str | None
    index: int | None


def arms_of(trial) -> list[Arm]:
    config = trial_of(trial.config)
    if "arms" not in config:
        return [Arm(trial.trial_id, trial.config, None, None)]
    return [Arm(arm_trial_id(trial.trial_id, k), arm, trial.trial_id, k) for k, arm in enumerate(config["arms"])]


def arm_results(trial, result: dict[str, Any]) -> list[tuple[Arm, dict[str, Any]]]:
    """(arm, its result) for every arm a Tune result reports: group-level keys (iteration,
    step, time, where) with the arm's own metrics over them."""
    arms = arms_of(trial)
    if "arms" not in result:
        return [(arms[0], result)]
    shared = {k: v for k, v in result.items() if k != "arms"}
    # Under PBT an arm's entry carries the configuration it ran with (its group changes it).
    return [(arms[entry["arm"]]._replace(config=entry.get("config", arms[entry["arm"]].config)), {**shared, **entry})
            for entry in result["arms"]]


class MetricsFile(NamedTuple):
    """One file of the metrics dataset: a trial's rows for iterations first..last."""
    name: str
    trial_id: str
    first: int
    last: int

    @classmethod
    def parse(cls, name: str) -> "MetricsFile | None":
        match = METRICS_FILE_NAME.match(name)
        if match is None:
            return None
        return cls(name, match["trial_id"], int(match["first"]), int(match["last"]))

    @classmethod
    def named(cls, trial_id: str, first: int, last: int) -> "MetricsFile":
        return cls(f"{trial_id}-{first}-{last}.parquet", trial_id, first, last)

    def inside(self, other: "MetricsFile") -> bool:
        return self.name != other.name and other.first <= self.first and self.last <= other.last


def _iterations_in(run: RunLocation, file: MetricsFile) -> set[int]:
    return set(run.read_table(METRICS_DIR, file.name, columns=["iteration"]).column("iteration").to_pylist())


def repair_interrupted_compactions(run: RunLocation, files: list[MetricsFile]) -> list[MetricsFile]:
    """A trial's files less those a compaction had merged but not yet deleted when the driver
    died: a file whose range lies inside another's and whose iterations are all in it. (Under
    PBT a trial's iterations may jump, so a range alone does not prove the rows are there.)"""
    kept = sorted(files, key=lambda f: (f.first - f.last, f.first))  # widest first
    for file in list(kept):
        for wider in kept:
            if file.inside(wider) and _iterations_in(run, file) <= _iterations_in(run, wider):
                run.delete(METRICS_DIR, file.name)
                kept.remove(file)
                break
    return kept


def written_iterations(run: RunLocation, files: list[MetricsFile]) -> set[tuple[str, int]]:
    """(trial_id, iteration) pairs in the given metrics files (each read alone, so the caller
    has already set aside the unreadable ones)."""
    pairs: set[tuple[str, int]] = set()
    for file in files:
        table = run.read_table(METRICS_DIR, file.name, columns=["trial_id", "iteration"])
        pairs.update(zip(table.column("trial_id").to_pylist(), table.column("iteration").to_pylist()))
    return pairs


def set_aside_unreadable(run: RunLocation) -> list[MetricsFile]:
    """The sink's readable metrics files. An unreadable one (truncated, not Parquet, wrong
    columns) is moved to ``metrics-unreadable/`` with one line naming it and the rows it held;
    a file not named like the sink's is left where it is, with a warning (readers skip it)."""
    readable = []
    for path in run.parquet_files(METRICS_DIR):
        name = path.rsplit("/", 1)[-1]
        file = MetricsFile.parse(name)
        if file is None:
            print(f"warning: ignoring {run.uri(METRICS_DIR, name)}: not a file this sweep wrote",
                  file=sys.stderr, flush=True)
            continue
        try:
            schema = pq.read_schema(path, filesystem=run.fs)
            missing = [c for c in ("trial_id", "iteration") if c not in schema.names]
            if missing:
                raise ValueError(f"no column {missing[0]}")
        except (OSError, ValueError, pa.ArrowException) as e:
            run.makedirs(UNREADABLE_DIR)
            run.fs.move(path, run.sub(UNREADABLE_DIR, name))
            print(f"warning: {run.uri(METRICS_DIR, name)} cannot be read ({_first_line(e)}); moved to "
                  f"{run.uri(UNREADABLE_DIR, name)}. Rows lost: trial {file.trial_id}, iterations "
                  f"{file.first}..{file.last}", file=sys.stderr, flush=True)
            continue
        readable.append(file)
    return readable


def _checkpoint_uri(checkpoint, *parts: str, query: str = "") -> str:
    """A checkpoint (or a file in it) as a URI, with the storage URI's query options if any."""
    scheme = {"local": "", "s3": "s3://", "gcs": "gs://", "hdfs": "hdfs://"}.get(checkpoint.filesystem.type_name, "")
    return with_query("/".join([scheme + checkpoint.path, *parts]), query)


class ParquetResults(Callback):
    """Streams every reported result of a sweep into the Parquet dataset (see module doc)."""

    def __init__(self, run_dir: str | None, sweep: str, task_names: list[str], cpus: float, gpus: float,
                 flush_seconds: float = 5.0) -> None:
        self.run_dir = run_dir
        self._files = RunLocation(run_dir) if run_dir is not None else None
        self.sweep = sweep
        self.task_names = list(task_names)
        self.cpus, self.gpus = float(cpus), float(gpus)
        self.flush_seconds = flush_seconds  # how often trials.parquet catches up with results
        self._schema = trials_schema(self.task_names)
        self._written: set[tuple[str, int]] = set()
        self._metrics_files: dict[str, list[MetricsFile]] = {}
        self._pending: dict[str, list[dict[str, Any]]] = {}  # rows waiting for the next state save
        # The rows this driver wrote, by trial, as Arrow tables (~150 B a row; kept as Python
        # dicts they took ~750 B, GBs in a long sweep of many arms): the merge's input.
        self._session_tables: dict[str, list[pa.Table]] = {}
        self._session_parts: dict[str, set[str]] = {}  # the part files holding them
        self._trials: dict[str, dict[str, Any]] = {}
        self._trials_seen = 0  # Tune's trial list only grows: rows exist for its first N
        self._trials_dirty = False
        self._touched: set[str] = set()  # trial_ids whose rows changed since trials.parquet was written
        self._trials_written: pa.Table | None = None  # what it holds (None: not written by this sink yet)
        self._last_flush = time.monotonic()
        self._trials_write_s = 0.0
        self.failure: OSError | None = None  # a write that failed (Tune swallows some of our errors)

    def __reduce__(self):
        return (type(self), (None, self.sweep, self.task_names, self.cpus, self.gpus, self.flush_seconds))

    def relocate(self, run_dir: str) -> None:
        """Where the run is now (a restored sink knows no path; see module doc)."""
        self.run_dir = run_dir
        self._files = RunLocation(run_dir)

    # ------------------------------------------------------------------ Tune callback hooks
    def setup(self, **info: Any) -> None:
        if self._files is None:
            raise RuntimeError("ParquetResults was restored without relocate(run_dir): it does not know "
                               "where the run is")
        self._files.makedirs(METRICS_DIR)
        self._files.delete_temporaries(METRICS_DIR)  # left by a driver killed mid-write
        if self._files.local:  # a compaction cut short: before its swap, or the parts after it
            shutil.rmtree(self._files.sub(COMPACTING_DIR), ignore_errors=True)
        readable = set_aside_unreadable(self._files)
        by_trial: dict[str, list[MetricsFile]] = {}
        for file in readable:
            by_trial.setdefault(file.trial_id, []).append(file)
        self._metrics_files = {trial_id: repair_interrupted_compactions(self._files, files)
                               for trial_id, files in by_trial.items()}
        self._written = written_iterations(self._files, [f for fs in self._metrics_files.values() for f in fs])
        if self._files.exists(TRIALS_FILE):
            try:
                rows = self._files.read_table(TRIALS_FILE).to_pylist()
            except (OSError, pa.ArrowException) as e:  # rebuilt from Tune's trials at the first step
                print(f"warning: {self._files.uri(TRIALS_FILE)} cannot be read ({_first_line(e)}); "
                      f"rewriting it from the sweep's trials", file=sys.stderr, flush=True)
                rows = []
            for row in rows:
                self._trials[row["trial_id"]] = {k: row.get(k) for k in self._schema.names}

    def get_state(self) -> None:
        """Called by Tune while it saves the experiment state, before the upload: write the
        rows that state's checkpoints stand for (module doc). Keeps no state of its own."""
        self._persist_pending()
        if self._trials_dirty and self._trials_due():
            self._write_trials()
        return None

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._trials_seen == 0 and trials:
            self._adopt_tune_statuses(trials)  # a resumed sweep: Tune knows how each trial ended
        for trial in trials[self._trials_seen:]:
            for arm in arms_of(trial):
                if arm.trial_id not in self._trials:
                    self._row(arm)["status"] = PENDING
                    self._trials_dirty = True
        self._trials_seen = len(trials)
        if self._trials_dirty and self._trials_due():
            self._write_trials()

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        for arm in arms_of(trial):
            self._set_status(arm, RUNNING)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        for arm, arm_result in arm_results(trial, result):
            self._arm_result(arm, arm_result)

    def _arm_result(self, trial: Arm, result: dict) -> None:
        row = self._row(trial)
        if canonical_trial(trial.config)["config_id"] != row["config_id"]:
            row.update(config_columns(trial.config, self.task_names))  # PBT changed the trial's configuration
        for key in ("node_ip", "hostname", "device", "cpus", "gpus", "arch"):
            if key in result:
                row[key] = result[key]
        self._trials_dirty = True
        if result.get("diverged"):
            row["status"], row["error"] = DIVERGED, str(result.get("error", DIVERGED))
            row["time_s"] = float(result.get("time_s", math.nan))
            return
        iteration_done = int(result["iteration"])
        row["iterations"] = iteration_done
        row["time_s"] = float(result["time_s"])
        for t in self.task_names:
            row[f"fid_{t}"], row[f"kid_{t}"] = result.get(f"fid/{t}"), result.get(f"kid/{t}")
        row["fid_mean"], row["kid_mean"] = result.get("fid_mean"), result.get("kid_mean")
        key = (trial.trial_id, iteration_done)
        if result.get("stopped"):  # ASHA stopped this arm of a group at this iteration: it has ended
            row["status"] = TERMINATED
        if key in self._written:
            return  # replayed after a restore: already on disk
        timestamp = datetime.now(timezone.utc)  # Tune's own "timestamp" is whole seconds
        # The last planned iteration is final now; an arm that ends earlier gets it at compaction.
        final = row["iterations_planned"] is not None and iteration_done >= int(row["iterations_planned"])
        self._pending.setdefault(trial.trial_id, []).extend(
            {"schema_version": SCHEMA_VERSION, "sweep": self.sweep, "trial_id": trial.trial_id,
             "group_id": trial.group_id, "config_id": row["config_id"], "iteration": iteration_done,
             "step": int(result["step"]),
             "task": t, "task_index": i,
             **{m: float(result[f"{m}/{t}"]) for m in (*METRIC_NAMES, *LOSS_NAMES)},
             "time_s": float(result["time_s"]), "timestamp": timestamp, "final": final}
            for i, t in enumerate(self.task_names))
        self._written.add(key)

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info: Any) -> None:
        query = self._files.query
        for arm in arms_of(trial):
            row = self._row(arm)
            if row["status"] == DIVERGED:
                continue
            row["checkpoint_path"] = _checkpoint_uri(checkpoint, query=query)
            samples = samples_file(arm.index)
            has_samples = checkpoint.filesystem.get_file_info(f"{checkpoint.path}/{samples}").is_file
            row["samples_path"] = _checkpoint_uri(checkpoint, samples, query=query) if has_samples else None
        self._trials_dirty = True

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._persist_pending()  # new part files only: the merge waits for the sweep's end
        for arm in arms_of(trial):
            if self._row(arm)["status"] != DIVERGED:
                self._row(arm)["status"] = TERMINATED
        self._trials_dirty = True

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._persist_pending()
        for arm in arms_of(trial):
            row = self._row(arm)
            if _has_ended(arm, row):  # diverged or stopped before its group failed: keeps that end
                continue
            row["status"] = ERROR
            row["error"] = first_error_line(trial)
        self._trials_dirty = True

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Not while trials run: a glob reader fails on a file deleted between its listing and
        # its opening (module doc). Trials of an earlier driver are compacted here too.
        # trials.parquet first: a reader sees every trial ended before any file is merged away.
        with self._recording_failure():
            self._persist_pending()
            self._write_trials()
            self.compact_all()
            self._write_trials()

    # -------------------------------------------------------------------------- writing
    def _persist_pending(self) -> None:
        """Write every trial's rows still in memory, one part file per trial."""
        with self._recording_failure():
            self._persist_pending_now()

    @contextlib.contextmanager
    def _recording_failure(self):
        """Keep the first OSError of a write: Tune logs and goes on from an error raised in
        its final save or in ``on_experiment_end``; the driver checks ``failure``."""
        try:
            yield
        except OSError as e:
            if self.failure is None:
                self.failure = e
            raise

    def _persist_pending_now(self) -> None:
        for trial_id in list(self._pending):
            rows = self._pending[trial_id]
            iterations = [r["iteration"] for r in rows]
            part = MetricsFile.named(trial_id, min(iterations), max(iterations))
            table = pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)
            self._files.write_table(table, METRICS_DIR, part.name)
            del self._pending[trial_id]
            self._metrics_files.setdefault(trial_id, []).append(part)
            kept = self._session_tables.setdefault(trial_id, [])
            kept.append(table)
            if len(kept) >= SESSION_TABLES_MERGED_AT:
                kept[:] = [pa.concat_tables(kept).combine_chunks()]
            self._session_parts.setdefault(trial_id, set()).add(part.name)

    def compact_all(self) -> None:
        """Compact every trial (``compact``): on a local disk all at once -- the new metrics/
        is built beside it (``.metrics-compacting/``: merged files, hard links to the rest) and
        the two directories are swapped in one atomic rename -- so a ``metrics/*.parquet`` glob
        lists the parts or the merged files, never both. Elsewhere (object stores, a file
        system without that rename) trial by trial."""
        trial_ids = sorted(set(self._metrics_files) | set(self._pending))
        if self._files.local and _exchange_supported() and self._compact_by_exchange(trial_ids):
            return
        for trial_id in trial_ids:
            self.compact(trial_id)

    def compact(self, trial_id: str) -> None:
        """Merge a trial's metrics files and rows still in memory into one
        ``<trial_id>-<first>-<last>.parquet``; for a trial that has ended, flag its last
        iteration's rows ``final`` (and only those).

        The merged file is complete on disk before any part is deleted, so a crash loses
        nothing (setup() deletes the leftover parts); readers may meanwhile see both."""
        merged = self._merged(trial_id)
        if merged is not None:
            file, table = merged
            self._files.write_table(table, METRICS_DIR, file.name)
            for part in self._metrics_files.get(trial_id, []):
                if part.name != file.name:
                    self._files.delete(METRICS_DIR, part.name)
            self._metrics_files[trial_id] = [file]
        self._pending.pop(trial_id, None)
        self._drop_session(trial_id)

    def _merged(self, trial_id: str) -> tuple[MetricsFile, pa.Table] | None:
        """The trial's one merged file and its rows, or None when its files are final already.
        Rows this driver wrote come from memory: only parts of an earlier driver are read back."""
        files = self._metrics_files.get(trial_id, [])
        pending = self._pending.get(trial_id, [])
        ended = self._trials.get(trial_id, {}).get("status") in (TERMINATED, *FAILED_STATUSES)
        if not pending and (not files or (len(files) < 2 and not ended)):
            return None
        mine = self._session_parts.get(trial_id, set())
        tables = [pa.Table.from_pylist(pending, schema=METRICS_SCHEMA)]
        tables += self._session_tables.get(trial_id, [])
        tables += [metrics_as_current(self._files.read_table(METRICS_DIR, f.name))
                   for f in files if f.name not in mine]
        table = pa.concat_tables(tables).sort_by([("iteration", "ascending"), ("task_index", "ascending")])
        if ended:
            final = pc.equal(table["iteration"], pc.max(table["iteration"]))
            if not pending and len(files) == 1 and table["final"].to_pylist() == final.to_pylist():
                return None  # one file, flagged already
            table = table.set_column(table.schema.get_field_index("final"), "final", final)
        iterations = table.column("iteration")
        return MetricsFile.named(trial_id, pc_min(iterations), pc_max(iterations)), table

    def _compact_by_exchange(self, trial_ids: list[str]) -> bool:
        """compact_all's atomic swap; False (nothing changed) where metrics/ holds anything but
        plain files or a hard link or the rename is refused."""
        metrics, staging = Path(self._files.sub(METRICS_DIR)), Path(self._files.sub(COMPACTING_DIR))
        entries = list(os.scandir(metrics))
        if any(not e.is_file(follow_symlinks=False) for e in entries):
            return False
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        merged_files: dict[str, MetricsFile] = {}
        replaced: set[str] = set()
        for trial_id in trial_ids:
            merged = self._merged(trial_id)
            if merged is None:
                continue
            file, table = merged
            pq.write_table(table, staging / file.name)
            merged_files[trial_id] = file
            replaced.update(f.name for f in self._metrics_files.get(trial_id, []))
        try:
            for entry in entries:
                if entry.name not in replaced and not entry.name.startswith(".tmp-"):
                    os.link(entry.path, staging / entry.name)  # EPERM on some FUSE/CIFS mounts
            _exchange(staging, metrics)
        except OSError:  # e.g. EINVAL: the file system has no such rename; compact trial by trial
            shutil.rmtree(staging, ignore_errors=True)
            return False
        shutil.rmtree(staging, ignore_errors=True)  # the parts, now out of every reader's glob
        for trial_id in trial_ids:
            if trial_id in merged_files:
                self._metrics_files[trial_id] = [merged_files[trial_id]]
            self._pending.pop(trial_id, None)
            self._drop_session(trial_id)
        return True

    def _drop_session(self, trial_id: str) -> None:
        self._session_tables.pop(trial_id, None)
        self._session_parts.pop(trial_id, None)

    def _trials_due(self) -> bool:
        # Writing trials.parquet still costs O(trials) (in Arrow's C++: the table is kept, only
        # changed rows are converted): at most ~5% of the driver's time on it.
        interval = max(self.flush_seconds, 20.0 * self._trials_write_s)
        return time.monotonic() - self._last_flush >= interval

    def _trials_table(self) -> pa.Table:
        """trials.parquet's table: the one last written with the rows touched since replaced.
        Converting rows from Python is what cost time (~60 us a row): only those are."""
        if self._trials_written is None:
            changed, kept = list(self._trials), None
        else:
            changed = sorted(self._touched)
            stale = pc.is_in(self._trials_written["trial_id"], value_set=pa.array(changed, pa.string()))
            kept = self._trials_written.filter(pc.invert(stale))
        fresh = pa.Table.from_pylist([self._trials[t] for t in changed], schema=self._schema)
        table = fresh if kept is None else pa.concat_tables([kept, fresh])
        return table.sort_by("trial_id")

    def _write_trials(self) -> None:
        started = time.monotonic()
        table = self._trials_table()
        self._files.write_table(table, TRIALS_FILE)
        self._trials_written = table
        self._touched.clear()
        self._trials_dirty = False
        self._last_flush = time.monotonic()
        self._trials_write_s = self._last_flush - started

    def _set_status(self, trial: Arm, status: str) -> None:
        row = self._row(trial)
        if not _has_ended(trial, row):
            row["status"] = status
        self._trials_dirty = True

    def _adopt_tune_statuses(self, trials: list) -> None:
        """After a resume, trials.parquet may lag: take each trial's end from Tune's state."""
        for trial in trials:
            status = getattr(trial, "status", None)
            last = getattr(trial, "last_result", None) or {}
            for arm in arms_of(trial):
                row = self._row(arm)
                if row["status"] == DIVERGED or status not in (TERMINATED, ERROR):
                    continue
                arm_last = {a.trial_id: r for a, r in arm_results(trial, last)}.get(arm.trial_id, {})
                if arm_last.get("diverged"):
                    row["status"], row["error"] = DIVERGED, str(arm_last.get("error", DIVERGED))
                elif row["status"] != status:
                    row["status"] = status
                    if status == ERROR:
                        row["error"] = first_error_line(trial)
                self._trials_dirty = True

    def _row(self, trial: Arm) -> dict[str, Any]:
        """The trials.parquet row of an arm, created from its config on first sight; the
        caller may change it (so it is written again)."""
        self._touched.add(trial.trial_id)
        if trial.trial_id in self._trials:
            return self._trials[trial.trial_id]
        row: dict[str, Any] = {k: None for k in self._schema.names}
        row.update({"schema_version": SCHEMA_VERSION, "sweep": self.sweep, "trial_id": trial.trial_id,
                    "group_id": trial.group_id, "status": PENDING, "iterations": 0, "cpus": self.cpus,
                    "gpus": self.gpus,
                    **config_columns(trial.config, self.task_names)})
        self._trials[trial.trial_id] = row
        return row



def _has_ended(arm: Arm, row: dict[str, Any]) -> bool:
    """An arm can end while its group goes on (diverged, or stopped by ASHA): a later status of
    the group (running again after a resume, failed) is not the arm's."""
    return row["status"] == DIVERGED or (arm.group_id is not None and row["status"] == TERMINATED)


# A trial's kept tables are merged into one every this many writes: a small table costs ~2.7 KB
# whatever its rows, and merging on every write copied all the trial's rows each time.
SESSION_TABLES_MERGED_AT = 16
COMPACTING_DIR = ".metrics-compacting"  # beside metrics/, outside its glob (compact_all)
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _renameat2():
    import ctypes

    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None


def _exchange_supported() -> bool:
    return _renameat2() is not None


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories in one atomic rename (Linux renameat2 RENAME_EXCHANGE)."""
    import ctypes

    if _renameat2()(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), str(a))


def pc_min(column) -> int:
    return int(pc.min(column).as_py())


def pc_max(column) -> int:
    return int(pc.max(column).as_py())


def _first_line(error: BaseException) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return lines[0] if lines else type(error).__name__


def config_columns(config: dict[str, Any], task_names: list[str]) -> dict[str, Any]:
    """A trial's configuration as trials.parquet's flat columns (Tune's loggers get them too:
    one named value per searched quantity, ``lambda_<task>`` included). Hard sharing's α is
    recorded as inf, the α → ∞ limit it is (its config's α is unused), so that it cannot be
    mistaken for the independent arms' α = 0."""
    plain = canonical_trial(config)
    cfg = GANConfig.from_dict(gan_config_dict(plain))
    lambdas = cfg.task_lambdas(len(task_names))
    return {
        "config_id": plain["config_id"], "baseline_key": plain["baseline_key"],
        "seed": cfg.seed, "replicate": cfg.replicate, "mode": cfg.mode,
        "alpha": math.inf if cfg.mode == HARD else cfg.alpha,
        **{f"lambda_{t}": lam for t, lam in zip(task_names, lambdas)},
        "data": cfg.data, "samples_per_task": cfg.samples_per_task, "width": cfg.width, "z_dim": cfg.z_dim,
        "lr": cfg.lr, "batch_size": cfg.batch_size, "gan_loss": cfg.gan_loss, "eval_samples": cfg.eval_samples,
        "steps_per_iteration": plain.get("steps_per_iteration"), "iterations_planned": plain.get("iterations"),
    }


def first_error_line(trial) -> str:
    message = getattr(trial, "error_msg", None) or ""
    if not message and getattr(trial, "error_file", None) and Path(trial.error_file).exists():
        message = Path(trial.error_file).read_text()
    lines = [ln for ln in str(message).splitlines() if ln.strip()]
    return lines[-1] if lines else "error"
