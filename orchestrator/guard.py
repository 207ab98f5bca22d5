"""What keeps a sweep's driver from losing, executing or hanging: the pieces sweep.main wires in.

- ``StateSigner``: a Tune callback that signs the pickled state Tune writes (orchestrator.signing)
  so ``--resume`` can refuse planted files before anything is unpickled (``verify_run_state``).
- ``resume_mode``: after a SIGKILL at any moment, whether a run can be restored, or nothing ran
  and it starts afresh from its sweep.json (``discard_unstarted_state``).
- ``ResumableCheckpoints``: on ``--resume``, a trial whose recorded checkpoint is missing or
  incomplete (a full disk, a state saved before Tune deleted an old checkpoint) goes on from its
  newest whole earlier checkpoint, or from scratch, instead of failing.
- ``Interrupts``: SIGINT / SIGTERM stop Tune gracefully (its last state saved) and the driver
  then exits 130 / 143 with the resume command.
- ``storage_failure``: the OSError behind a failing store (disk full...), for one line.
"""
from __future__ import annotations

import errno
import fnmatch
import json
import os
import pickle
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from orchestrator import signing
from orchestrator.schema import METRICS_DIR, TUNER_STATE_FILE, RunLocation

SIGNATURES_FILE = "state-signatures.json"
EXPERIMENT_STATE = "experiment_state-*.json"


def _names(run: RunLocation) -> list[str]:
    import pyarrow.fs as pafs

    infos = run.fs.get_file_info(pafs.FileSelector(run.path, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.is_file)


def _read_bytes(run: RunLocation, name: str) -> bytes:
    with run.fs.open_input_stream(run.sub(name)) as f:
        return f.read()


def _write_bytes(run: RunLocation, name: str, data: bytes) -> None:
    with run.fs.open_output_stream(run.sub(name)) as f:
        f.write(data)


class StateSigner(Callback):
    """Signs the files Tune unpickles on restore, as Tune writes them (see orchestrator.signing).

    Tune saves its experiment state into a local staging directory and then uploads that
    directory; ``get_state`` runs during the save (after the state and searcher files, before
    the upload), so the signatures travel in the same upload. Files written after it in the same
    save (the callbacks' own state) are signed at the next step and the signatures written to
    the run directly. Pickles as nothing: the key is read on the driver, never stored."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.run: RunLocation | None = None
        self.signatures = signing.Signatures()
        self._staging: Path | None = None
        self._signed_mtimes: dict[str, int] = {}

    def __reduce__(self):
        return (type(self), ())

    def start(self, key: bytes, run: RunLocation, signatures: signing.Signatures) -> None:
        self.key, self.run, self.signatures = key, run, signatures

    def sign_bytes(self, name: str, content: bytes) -> None:
        self.signatures.add(self.key, name, content)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # Tune 2.60 calls no callback when a trial is added; a trial's storage names the
        # experiment's staging directory (the same for every trial).
        if self._staging is None and trials:
            self._staging = Path(trials[0].storage.experiment_driver_staging_path)

    def _sign_staging(self) -> bool:
        if self.key is None or self._staging is None or not self._staging.is_dir():
            return False
        changed = False
        for entry in os.scandir(self._staging):
            if entry.is_file() and signing.is_tune_state(entry.name):
                mtime = entry.stat().st_mtime_ns
                if self._signed_mtimes.get(entry.name) != mtime:
                    self.signatures.add(self.key, entry.name, Path(entry.path).read_bytes())
                    self._signed_mtimes[entry.name] = mtime
                    changed = True
        if changed:
            (self._staging / SIGNATURES_FILE).write_text(self.signatures.dumps())
        return changed

    def get_state(self) -> None:
        self._sign_staging()
        return None

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._sign_staging() and self.run is not None:
            _write_bytes(self.run, SIGNATURES_FILE, self.signatures.dumps().encode())

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.on_step_end(0, trials)


def find_callback(tuner, kind: type):
    """The callback of a (possibly restored) Tuner of the given type, or None."""
    for callback in tuner._local_tuner.get_run_config().callbacks or []:
        if isinstance(callback, kind):
            return callback
    return None


def load_signatures(run: RunLocation) -> signing.Signatures:
    return signing.Signatures.loads(run.read_text(SIGNATURES_FILE) if run.exists(SIGNATURES_FILE) else None)


def sign_tuner_state(tuner, run: RunLocation, signer: StateSigner) -> None:
    """Sign tuner.pkl as this driver pickled it, and make the run hold exactly those bytes.

    Tune writes tuner.pkl when the Tuner is built; the driver pickles the same state again
    itself rather than trusting what the storage returns (pickling one object graph twice gives
    the same bytes) -- with Tune's own pickler, cloudpickle, which also takes what a user's
    callback may hold (Ray's MLflow logger holds the mlflow module)."""
    import ray.cloudpickle

    content = ray.cloudpickle.dumps(tuner._local_tuner.__getstate__())
    signer.sign_bytes(TUNER_STATE_FILE, content)
    if not run.exists(TUNER_STATE_FILE) or _read_bytes(run, TUNER_STATE_FILE) != content:
        _write_bytes(run, TUNER_STATE_FILE, content)
    _write_bytes(run, SIGNATURES_FILE, signer.signatures.dumps().encode())


def verify_run_state(run: RunLocation, key: bytes) -> signing.Signatures:
    """Refuse (SignatureError, one line) a run holding any file Tune would unpickle that this
    user's key did not sign; return the run's signatures."""
    signatures = load_signatures(run)
    contents = {name: _read_bytes(run, name) for name in _names(run) if signing.is_tune_state(name)}
    unsigned = signing.unsigned_files(key, contents, signatures)
    if unsigned:
        more = f" and {len(unsigned) - 1} more" if len(unsigned) > 1 else ""
        raise signing.SignatureError(
            f"--resume: {run.uri(unsigned[0])}{more} is not signed by this user's key ({signing.key_path()}): "
            f"it was written by someone else, or by this sweep under another user or machine; refusing to "
            f"unpickle it (only those who may run code as you may write this storage)")
    return signatures


def resume_mode(run: RunLocation) -> str:
    """"restore" when Tune saved trials to restore; "fresh" when nothing ran (the driver died
    before Tune's first save of a trial): the sweep then starts from its sweep.json.

    The experiment state is read as plain JSON, which unpickles nothing."""
    states = [n for n in _names(run) if fnmatch.fnmatchcase(n, EXPERIMENT_STATE)]
    if not states or not run.exists(TUNER_STATE_FILE):
        return "fresh"
    for name in states:
        try:
            if json.loads(_read_bytes(run, name)).get("trial_data"):
                return "restore"
        except (ValueError, AttributeError):
            return "restore"  # unreadable: let the signature check and Tune speak
    return "fresh"


def discard_unstarted_state(run: RunLocation) -> list[str]:
    """Remove what an unstarted sweep left besides sweep.json (Tune's files, an empty or
    orphaned metrics/ moved aside), so a fresh start cannot mix with it; returns notes."""
    notes = []
    for name in _names(run):
        if signing.is_tune_state(name) or name == SIGNATURES_FILE or name == ".validate_storage_marker":
            run.delete(name)
    if run.parquet_files(METRICS_DIR):
        aside = f"{METRICS_DIR}-abandoned-{time.strftime('%Y%m%d-%H%M%S')}"
        run.fs.move(run.sub(METRICS_DIR), run.sub(aside))
        notes.append(f"note: rows of trials Tune never recorded moved to {run.uri(aside)}")
    return notes


def checkpoint_problem(fs, path: str) -> str | None:
    """Why the trainable could not go on from the checkpoint directory ``path``, or None: it
    must hold a meta.json that parses, the stopped arms' files it names, and a state.pt that
    loads as the trainable loads it (tensors only) -- unless ASHA had stopped every arm of the
    group (``arms_left`` 0: no state is written). What a full disk leaves -- no directory, a
    file cut short -- fails this."""
    import io

    import pyarrow as pa
    import pyarrow.fs as pafs
    import torch

    from trainables.tune_trainable import META_FILE, STATE_FILE

    try:
        with fs.open_input_stream(f"{path}/{META_FILE}") as f:
            meta = json.loads(f.read())
        int(meta["iteration"])
        for name in meta.get("finished", []):
            if fs.get_file_info(f"{path}/{name}").type == pafs.FileType.NotFound:
                raise FileNotFoundError(name)
        if meta.get("arms_left") != 0:
            with fs.open_input_stream(f"{path}/{STATE_FILE}") as f:
                torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return "missing" if fs.get_file_info(path).type == pafs.FileType.NotFound else "incomplete"
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, pa.ArrowException,
            pickle.UnpicklingError) as e:
        return f"unreadable ({type(e).__name__})"
    return None


def _checkpoint_index(path: str) -> int | None:
    from orchestrator.trained import CHECKPOINT_DIR

    match = CHECKPOINT_DIR.match(path.rstrip("/").rsplit("/", 1)[-1])
    return int(match[1]) if match else None


class ResumableCheckpoints(Callback):
    """Before a resumed sweep starts its first trial, point every trial Tune will restore at a
    checkpoint it can go on from (``checkpoint_problem``): Tune would otherwise fail the trial
    ("checkpoint does not exist on storage anymore") and no retry could help.

    A trial whose recorded checkpoint is not whole goes on from its newest whole *earlier*
    checkpoint -- Tune's other recorded ones, then older ``checkpoint_*`` directories on
    storage -- or from scratch. Never from a later one: the rows of iterations after the saved
    state may not have been written (orchestrator.results), while those before it all were, so
    the iterations the trial replays are the ones already on disk (skipped by the sink) or not
    yet written: nothing is lost or doubled. One line per trial says what happened."""

    def __init__(self) -> None:
        self._checked = False

    def __reduce__(self):
        return (type(self), ())

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._checked:
            return
        self._checked = True
        for trial in trials:
            if trial.status != "TERMINATED":
                self._check(trial)

    def _check(self, trial) -> None:
        import pyarrow.fs as pafs
        from ray.train._internal.session import _TrainingResult
        from ray.tune import Checkpoint

        manager = trial.run_metadata.checkpoint_manager
        latest = manager.latest_checkpoint_result if manager is not None else None
        if latest is None:
            return
        fs, path = latest.checkpoint.filesystem, latest.checkpoint.path
        problem = checkpoint_problem(fs, path)
        if problem is None:
            return
        recorded = [r for r in manager._checkpoint_results if r is not latest]
        kept = [r for r in recorded if checkpoint_problem(r.checkpoint.filesystem, r.checkpoint.path) is None]
        fallback = kept[-1] if kept else None
        newest = _checkpoint_index(path)
        if fallback is None and newest is not None:  # older checkpoint directories Tune no longer lists
            trial_dir = path.rstrip("/").rsplit("/", 1)[0]
            found = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
            older = sorted((index, info.path) for info in found if info.type == pafs.FileType.Directory
                           and (index := _checkpoint_index(info.path)) is not None and index < newest)
            for _, older_path in reversed(older):
                if checkpoint_problem(fs, older_path) is None:
                    fallback = _TrainingResult(checkpoint=Checkpoint(older_path, filesystem=fs), metrics={})
                    break
        manager._checkpoint_results = kept if fallback is None or kept else [fallback]
        manager._latest_checkpoint_result = fallback
        trial.run_metadata.invalidate_cache()
        trial.invalidate_json_state()
        where = (f"goes on from {fallback.checkpoint.path.rstrip('/').rsplit('/', 1)[-1]}" if fallback is not None
                 else "starts again from scratch")
        print(f"note: trial {trial.trial_id}: its last checkpoint {path.rstrip('/').rsplit('/', 1)[-1]} is "
              f"{problem}; it {where} (iterations it replays that are on disk already are not written again)",
              file=sys.stderr, flush=True)


def stop_worker_output() -> None:
    """Stop printing the Ray workers' output in this driver: called once the trials are done.
    Ray then ends idle workers with SIGTERM, which its handler turns into a SystemExit that can
    land in a garbage-collection callback -- "Exception ignored in: ... SystemExit: 1", which
    Ray forwarded to the driver after a successful sweep. (No public API: Ray 2.60's own
    handler name; shutdown removes it the same way.)"""
    try:
        from ray._private.worker import global_worker_stdstream_dispatcher
    except ImportError:
        return
    global_worker_stdstream_dispatcher.remove_handler("ray_print_logs")


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interrupts:
    """SIGINT and SIGTERM: the first asks Tune to stop (it saves its state one last time and
    fit() returns); a second one stops waiting (KeyboardInterrupt / Interrupted)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "Interrupts":
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune would swallow the first Ctrl-C
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            raise Interrupted(signum)
        self.received = signum
        print(f"\n{signal.Signals(signum).name}: stopping the sweep; its state is saved once more "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)
        # Tune registers this handler for SIGUSR1 while fit() runs: it ends the loop gracefully.
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if callable(tune_stop):
            tune_stop(signal.SIGUSR1, frame)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @staticmethod
    def exit_code(signum: int) -> int:
        return 128 + signum


def storage_failure(error: BaseException) -> OSError | None:
    """The OSError (disk full, quota, permission, store unreachable) behind an exception Tune
    may have wrapped, or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS,
                                                          errno.EIO, errno.EFBIG):
            return error
        if isinstance(error, OSError) and "No space left" in str(error):
            return error
        error = error.__cause__ or error.__context__
    return None
