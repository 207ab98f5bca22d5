"""`python -m orchestrator.sweep`: run (or resume) a λ/α/sharing sweep on Ray Tune.

Everything the user typed is checked before Ray starts and before anything is written; a bad
input is one ``error: ...`` line on stderr and exit code 2. While the sweep runs there is one
line per finished arm and a status line with an ETA (orchestrator.progress); Ray's and Tune's
own output is quiet unless ``--verbose``. At the end it prints where the results are, the best
configurations and the analysis command, runnable as printed (this interpreter). ``--resume``
continues the sweep ``--name`` after its driver died (``Tuner.restore``); it reuses the settings
stored with that sweep, so only ``--name``, ``--storage`` and ``--address`` may be given with it
(any other flag is an error).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import search_spaces as ss
from orchestrator.confirm import CONFIRM_KEY
from orchestrator.schema import (INDEPENDENT, SCHEMA_VERSION, SWEEP_FILE, TERMINATED, TRIALS_FILE, RunLocation,
                                 trials_schema)
from orchestrator.runlock import LEASE_FILE, LOCK_FILE
from trainables.cli import OneLineParser, UsageError

RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # where `ray start` records its address
# \Z, not $: "$" also matches before a final newline, which would let "name\n" through.
NAME_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]*\Z")
MAX_NAME_LENGTH = 100  # a path component; file systems stop at 255 bytes
# trials.parquet has fid_<task>/kid_<task> and fid_mean/kid_mean columns
RESERVED_TASK_NAMES = ("mean",)
RESUME_FLAGS = ("name", "storage", "address", "resume", "verbose")  # the rest come from the stored sweep
ADDRESS_TIMEOUT_S = 5.0
# Left in a run directory by a driver that died before writing sweep.json: not a sweep yet.
STARTUP_RESIDUE = (LOCK_FILE, LEASE_FILE)
DESCRIPTION = """\
Run a sweep of the multi-task GAN's sharing strength alpha, task weights lambda and sharing
mode (independent, soft, hard) on Ray Tune -- an embedded local Ray, or a cluster with
--address -- pairing every shared configuration with an independent baseline at each seed.
Results stream into <storage>/<name>/ as Parquet (metrics/*.parquet, trials.parquet) with
sweep.json; analyse them with `python -m orchestrator.analyze RUN`. Flags override the sweep
file's settings; --resume continues a sweep whose driver died."""


def build_parser(typed_only: bool = False) -> argparse.ArgumentParser:
    """The command line; ``typed_only``: no defaults, so a parse holds just what was typed."""
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if typed_only else value

    p = OneLineParser(prog="python -m orchestrator.sweep", description=DESCRIPTION,
                      argument_default=argparse.SUPPRESS if typed_only else None)
    p.add_argument("--space", default=default("default"),
                   help="sweep file: a shipped one (%s) or FILE.yaml (default: %%(default)s)"
                        % ", ".join(ss.available_spaces()))
    p.add_argument("--data", help="task spec (default: the sweep file's): digits, digits:classes=0,1, "
                                  "digits:domains=plain,inverted, npz:PATH, folder:PATH, shapes:tasks=4")
    p.add_argument("--num-samples", type=int,
                   help="shared configurations to draw, each run at every seed (default: the sweep file's)")
    p.add_argument("--iterations", type=int,
                   help="train-and-evaluate rounds per trial, one metrics row each (default: the sweep file's)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the sweep file's)")
    p.add_argument("--cpus-per-trial", type=float, default=default(1.0),
                   help="CPUs Ray reserves for each trial; trials run in parallel as CPUs allow "
                        "(default: %(default)s)")
    p.add_argument("--gpus-per-trial", type=float, default=default(0.0),
                   help="fraction of one GPU per trial, 0..1; 0.25 packs four trials on a GPU (default: %(default)s)")
    p.add_argument("--arms-per-trial",
                   help="arms (configuration x seed) one Tune trial trains as one batched model: N or auto "
                        "(on CPU up to 8 when the sweep has enough arms to keep every CPU busy, else 1; a GPU "
                        "share's worth on GPU; default: the sweep file's, else auto)")
    p.add_argument("--search", choices=ss.SEARCHES, help="random | grid | optuna (default: the sweep file's)")
    p.add_argument("--scheduler", choices=ss.SCHEDULERS,
                   help="fifo | asha (stops weak shared arms early) | pbt (default: the sweep file's)")
    p.add_argument("--keep-checkpoints", type=int,
                   help="checkpoints each finished trial keeps, >= 1; the last holds the trained model and "
                        "its sample images (default: the sweep file's keep_checkpoints, else 1)")
    p.add_argument("--callback", action="append", metavar="MODULE:CLASS",
                   help="add your own Tune callback (a ray.tune.Callback subclass built with no arguments, "
                        "e.g. an MLflow or W&B logger; see the README); repeatable (default: none)")
    p.add_argument("--storage", default=default("./results"),
                   help="directory or URI (s3://bucket/prefix) holding the sweeps (default: %(default)s)")
    p.add_argument("--name", help="sweep name (default: <space>-YYYYmmdd-HHMMSS); with --resume, the sweep to continue")
    p.add_argument("--address", help="Ray cluster to join ('auto' or HOST:PORT) (default: start a local Ray)")
    p.add_argument("--resume", action="store_true", help="continue the sweep --name after its driver died")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's and Tune's own output (start-up lines, Tune's tables) as well")
    p.add_argument("--confirm", metavar="RUN_DIR", help="re-run the configurations the exploration RUN_DIR chose "
                                                       "(each task's best and the best overall) and the baseline "
                                                       "on the fresh --seeds; then analyze RUN_DIR NEW_RUN")
    p.add_argument("--until-decisive", action="store_true",
                   help="run --seeds as a first block, then further blocks of as many fresh seeds, until every "
                        "task's verdict crosses its O'Brien-Fleming boundary or --max-seeds is reached")
    p.add_argument("--max-seeds", type=int, help="with --until-decisive: the cap on seeds (all blocks together)")
    return p


def explicit_flags(argv: list[str] | None) -> set[str]:
    """The options the user typed (by dest), whatever their value -- defaults excluded."""
    return set(vars(build_parser(typed_only=True).parse_args(argv)))


# ------------------------------------------------------------------------------ validation
def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise UsageError("--seeds needs at least one seed")
    return seeds


def _check_numbers(args: argparse.Namespace) -> None:
    if args.num_samples is not None and args.num_samples < 1:
        raise UsageError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.iterations is not None and args.iterations < 1:
        raise UsageError(f"--iterations must be >= 1, got {args.iterations}")
    if args.keep_checkpoints is not None and args.keep_checkpoints < 1:
        raise UsageError(f"--keep-checkpoints must be >= 1 (the last checkpoint holds the trained model), "
                         f"got {args.keep_checkpoints}")
    if not (args.cpus_per_trial > 0 and math.isfinite(args.cpus_per_trial)):
        raise UsageError(f"--cpus-per-trial must be a finite number > 0, got {args.cpus_per_trial}")
    if not 0 <= args.gpus_per_trial <= 1:
        raise UsageError(f"--gpus-per-trial must be between 0 and 1 (a trial uses at most one GPU), "
                         f"got {args.gpus_per_trial}")


def _parse_arms(text: str | None) -> int | str | None:
    if text is None or text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--arms-per-trial must be an integer >= 1 or 'auto', got {text!r}") from None


# Arms per whole GPU under `auto`: measured on an H200 (README, "Arms grouped in one model"),
# 256 arms of the 4-task default GAN give ~180k task-steps/s in ~3 GiB.
ARMS_PER_GPU = 256


# On CPU `auto` groups up to CPU_ARMS_PER_TRIAL arms per trial, keeping at least
# TRIALS_PER_CPU_SLOT trials for each trial that can run at once (so the CPUs stay busy to the
# end): the default sweep's trials cost ~0.8x the CPU grouped (fewer, larger tensor operations
# and one optimiser call per step; README, "Arms grouped in one model on CPU").
CPU_ARMS_PER_TRIAL = 8
TRIALS_PER_CPU_SLOT = 8


def resolve_arms_per_trial(spec: ss.SweepSpec, gpus_per_trial: float, n_trials: int,
                           cpu_slots: int | None = None) -> tuple[int, str]:
    """(arms per Tune trial, why): ``auto`` groups only where it helps. ``cpu_slots``: how many
    CPU trials can run at once (None: not known before joining a cluster)."""
    if spec.arms_per_trial != "auto":
        return int(spec.arms_per_trial), "as asked"
    if gpus_per_trial == 0:
        if spec.search == "optuna" or spec.scheduler == "pbt":
            # Grouped, Optuna proposes a group's arms before any of them report, and PBT
            # exploits within a group only: one arm per trial keeps their usual behaviour.
            return 1, f"auto: one arm per trial under {spec.search if spec.search == 'optuna' else 'pbt'} on CPU"
        if not cpu_slots:
            return 1, "auto: one arm per trial on CPU (the cluster's CPUs are not known yet)"
        arms = max(1, min(CPU_ARMS_PER_TRIAL, n_trials // (cpu_slots * TRIALS_PER_CPU_SLOT)))
        if arms == 1:
            return 1, f"auto: one arm per trial on CPU ({n_trials} arms, {cpu_slots} trials at once)"
        return arms, (f"auto: on CPU an arm's step is cheaper in a group; up to {arms} per trial leaves "
                      f"{cpu_slots} trials at once with >= {TRIALS_PER_CPU_SLOT} trials each")
    arms = max(1, min(n_trials, int(ARMS_PER_GPU * gpus_per_trial)))
    return arms, f"auto: fills {gpus_per_trial:g} GPU per trial at about {ARMS_PER_GPU} arms per GPU"


def local_cpu_slots(args: argparse.Namespace) -> int | None:
    """How many CPU trials an embedded local Ray runs at once (None when joining a cluster)."""
    if args.address:
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, int(cpus // args.cpus_per_trial))


def _cluster_address(address: str) -> tuple[str, int]:
    """host, port of the Ray cluster named by --address ('auto' = the one `ray start` recorded)."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address and RAY_CURRENT_CLUSTER.exists():
            address = RAY_CURRENT_CLUSTER.read_text().strip()
        if not address or address == "auto":
            raise UsageError("--address auto: no running Ray cluster found on this machine "
                             "(start one with `ray start --head` or `ray up cluster.yaml`)")
    bare = address.split("://", 1)[-1]
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address must be 'auto' or HOST:PORT, got {address!r}")
    return host, int(port)


def _check_reachable(address: str) -> None:
    """Refuse, within ADDRESS_TIMEOUT_S and before any credential is sent, an address where no
    Ray GCS answers (orchestrator.gcs_probe: ray.init would wait forever there, sending the
    cluster token to whatever listens). With RAY_USE_TLS the probe is left out: ray.init then
    checks the server's certificate before it sends anything."""
    from orchestrator.gcs_probe import NotRayGcs, check_ray_gcs

    host, port = _cluster_address(address)
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return
    try:
        check_ray_gcs(host, port, timeout_s=ADDRESS_TIMEOUT_S)
    except NotRayGcs as e:
        raise UsageError(f"--address {address}: cannot reach a Ray cluster: {e}") from None


def _check_storage_writable(storage: RunLocation) -> None:
    """Refuse a --storage the sweep could not write, before Ray starts.

    Local: the nearest existing directory on the way must take a new entry. Access bits are not
    enough (root passes them, yet cannot create anything in /proc), so a probe directory is made
    and removed at once. URI: the storage root is created (a no-op where it exists)."""
    if storage.local:
        parent = Path(storage.path)
        while not _exists(parent) and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"--storage {storage.location}: {parent} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"--storage {storage.location}: {parent} is not writable")
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".mtgan-probe-", dir=parent))
        except OSError as e:
            raise UsageError(f"--storage {storage.location}: cannot write in {parent} ({e.strerror or e})") from None
        return
    try:
        storage.makedirs()
    except OSError as e:
        raise UsageError(f"--storage {storage.location}: {str(e).splitlines()[0]}") from None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a parent that is not searchable
        return False


def _validate_trials(spec: ss.SweepSpec, n_tasks: int) -> list[dict[str, Any]]:
    """Expand random/grid sweeps and build every trial's GANConfig (the core validates λ, α...)."""
    from trainables.config import GANConfig

    ss.check_against_tasks(spec, n_tasks)
    if spec.search == "optuna":
        probes = [{**ss.base_trial(spec), **k, **ss.baseline_arm(n_tasks), "seed": spec.seeds[0]}
                  for k in ss.knob_combinations(spec)]
        for probe in probes:
            GANConfig.from_dict(ss.gan_fields(probe)).task_lambdas(n_tasks)
        return []
    trials = ss.expand_trials(spec, n_tasks)
    for trial in trials:
        GANConfig.from_dict(ss.gan_fields(trial)).task_lambdas(n_tasks)
    return trials


def _load_task_names(spec: ss.SweepSpec) -> list[str]:
    from trainables.data import load_tasks

    sizes = spec.knobs.get("samples_per_task", [spec.fixed.get("samples_per_task")])
    names: list[str] = []
    for size in sizes:
        tasks = load_tasks(spec.data, samples_per_task=size,
                           test_fraction=spec.fixed.get("test_fraction", 0.25))
        names = tasks.names
    return names


@dataclass(frozen=True)
class SweepPlan:
    """Everything a validated command line resolved to (see plan_sweep)."""

    name: str
    storage: RunLocation       # --storage
    run: RunLocation           # <storage>/<name>: the run directory, a path or a URI
    spec: ss.SweepSpec
    task_names: list[str]
    cpus: float                # per trial
    gpus: float
    trials: list[dict[str, Any]]  # the expanded trials; empty for optuna (drawn while it runs)
    resume: bool
    address: str | None        # --address of a running Ray cluster, None: start a local Ray
    args: dict[str, Any]       # the parsed command line, recorded in sweep.json
    confirm: dict[str, Any] | None = None  # --confirm: what the exploration chose (orchestrator.confirm)

    @property
    def run_dir(self) -> str:
        return self.run.location

    def record_dict(self, argv: list[str] | None = None) -> dict[str, Any]:
        """sweep.json: the settings a --resume restores, and where the run came from
        (orchestrator.provenance; ``argv`` as given to main, None: this process' command line)."""
        from orchestrator.provenance import provenance

        origin = provenance("orchestrator.sweep", argv)
        return {"schema_version": SCHEMA_VERSION, "sweep": self.name, "space": self.spec.name,
                "spec": self.spec.to_dict(), "data": self.spec.data, "tasks": self.task_names,
                "n_tasks": len(self.task_names), "seeds": list(self.spec.seeds),
                "cpus_per_trial": self.cpus, "gpus_per_trial": self.gpus, "trials": self.trials,
                "args": dict(self.args), "created": time.time(),
                "ray_version": origin["versions"]["ray"], "command": origin["command"], "provenance": origin,
                **({CONFIRM_KEY: self.confirm} if self.confirm else {})}


def plan_sweep(args: argparse.Namespace, given: set[str] | None = None) -> SweepPlan:
    """Check a parsed command line, before Ray starts and before anything is written, and resolve
    it to a plan: a new sweep, or with --resume the stored one. ``given``: the flags typed
    explicitly (explicit_flags), checked against --resume."""
    if args.resume and given is not None:
        _check_resume_flags(given)
    storage = _open_storage(args.storage)
    _check_storage_writable(storage)
    if args.name is not None and not NAME_PATTERN.match(args.name):
        raise UsageError(f"--name must be letters, digits, '.', '_' or '-', got {args.name!r}")
    if args.name is not None and len(args.name) > MAX_NAME_LENGTH:
        raise UsageError(f"--name is {len(args.name)} characters long; at most {MAX_NAME_LENGTH}")
    if args.address:  # first of the slow checks: a wrong address fails within seconds
        _check_reachable(args.address)
    return plan_resume(args, storage) if args.resume else plan_new_sweep(args, storage)


def plan_confirm_sweep(args: argparse.Namespace, storage: RunLocation) -> SweepPlan:
    """--confirm RUN_DIR: the exploration's chosen configurations and its baseline on fresh seeds,
    with the exploration's sweep settings (steps, iterations, data, knobs)."""
    from orchestrator.confirm import chosen_configurations, confirm_trials, explore_trials

    seeds = _parse_seeds(args.seeds)
    if not seeds:
        raise UsageError("--confirm needs --seeds: fresh seeds, none of the exploration's")
    record = json.loads(RunLocation(args.confirm).read_text(SWEEP_FILE)) if RunLocation(args.confirm).exists(
        SWEEP_FILE) else None
    if not record or "spec" not in record:
        raise UsageError(f"--confirm {args.confirm}: not a sweep run directory (no readable {SWEEP_FILE})")
    reused = sorted(set(seeds) & set(record["spec"]["seeds"]))
    if reused:
        raise UsageError(f"--confirm: seed {reused[0]} was used by the exploration; confirm on fresh seeds")
    chosen = chosen_configurations(args.confirm)
    trials = confirm_trials(explore_trials(args.confirm),
                            [*dict.fromkeys([*chosen["chosen"].values(), chosen["overall"]])], seeds)
    spec = ss.SweepSpec(**{**record["spec"], "seeds": tuple(seeds), "modes": tuple(record["spec"]["modes"])})
    name = args.name or f"confirm-{record.get('sweep', 'run')}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = RunLocation(storage.uri(name))
    check_name_free(run, name, storage)
    return SweepPlan(name=name, storage=storage, run=run, spec=spec, task_names=record["tasks"],
                     cpus=args.cpus_per_trial, gpus=args.gpus_per_trial, trials=trials, resume=False,
                     address=args.address, args=dict(vars(args)), confirm=chosen)


def plan_new_sweep(args: argparse.Namespace, storage: RunLocation) -> SweepPlan:
    """A new sweep from the sweep file and the flags: every trial expanded and validated."""
    if getattr(args, "confirm", None):
        return plan_confirm_sweep(args, storage)
    _check_numbers(args)
    spec = ss.load_space(args.space).with_overrides(
        data=args.data, num_samples=args.num_samples, iterations=args.iterations, seeds=_parse_seeds(args.seeds),
        search=args.search, scheduler=args.scheduler, keep_checkpoints=args.keep_checkpoints,
        arms_per_trial=_parse_arms(args.arms_per_trial))
    _check_search(spec)
    task_names = _load_task_names(spec)
    reserved = [t for t in task_names if t in RESERVED_TASK_NAMES]
    if reserved:
        raise UsageError(f"--data {spec.data}: task name {reserved[0]!r} is reserved "
                         f"({TRIALS_FILE} has fid_mean/kid_mean columns); rename that task")
    trials = _validate_trials(spec, len(task_names))
    arms, why = resolve_arms_per_trial(spec, args.gpus_per_trial, len(trials), local_cpu_slots(args))
    spec = spec.with_overrides(arms_per_trial=arms)
    print(f"arms per trial: {arms} ({why})", flush=True)
    name = args.name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = RunLocation(storage.uri(name))
    check_name_free(run, name, storage)
    return SweepPlan(name=name, storage=storage, run=run, spec=spec, task_names=task_names,
                     cpus=args.cpus_per_trial, gpus=args.gpus_per_trial, trials=trials, resume=False,
                     address=args.address, args=dict(vars(args)))


def plan_resume(args: argparse.Namespace, storage: RunLocation) -> SweepPlan:
    """The sweep --name as its sweep.json recorded it, to continue with Tuner.restore."""
    if not args.name:
        raise UsageError("--resume needs --name of the sweep to continue")
    run = RunLocation(storage.uri(args.name))
    # sweep.json is written before anything else of a sweep: with it, the sweep exists (and a
    # fresh start with this name is refused); without it, it does not (and --resume is).
    if not run.exists(SWEEP_FILE):
        raise UsageError(f"--resume: no sweep named {args.name!r} under {storage.location}")
    try:
        record = json.loads(run.read_text(SWEEP_FILE))
        record["spec"], record["tasks"]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--resume: {run.uri(SWEEP_FILE)} cannot be read ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    spec = ss.SweepSpec(**{**record["spec"], "seeds": tuple(record["spec"]["seeds"]),
                           "modes": tuple(record["spec"]["modes"])})
    return SweepPlan(name=args.name, storage=storage, run=run, spec=spec, task_names=record["tasks"],
                     cpus=record["cpus_per_trial"], gpus=record["gpus_per_trial"], trials=record["trials"],
                     resume=True, address=args.address, args=dict(vars(args)))


def check_name_free(run: RunLocation, name: str, storage: RunLocation) -> None:
    """A new sweep's name is taken once its sweep.json exists (--resume then continues it); a
    directory holding only what a driver killed before that left is free."""
    if run.exists(SWEEP_FILE):
        raise UsageError(f"a sweep named {name!r} already exists under {storage.location} "
                         f"(choose another --name, or add --resume to continue it)")
    if run.is_dir():
        import pyarrow.fs as pafs

        others = [i.base_name for i in run.fs.get_file_info(pafs.FileSelector(run.path))
                  if i.base_name not in STARTUP_RESIDUE]
        if others:
            raise UsageError(f"{run.location} exists and is not a sweep (it holds {others[0]!r}, no "
                             f"{SWEEP_FILE}); choose another --name")
    elif run.exists():
        raise UsageError(f"{run.location} exists and is not a directory; choose another --name")


def _check_resume_flags(given: set[str]) -> None:
    ignored = sorted(given - set(RESUME_FLAGS))
    if ignored:
        flags = ", ".join("--" + dest.replace("_", "-") for dest in ignored)
        raise UsageError(f"--resume continues a sweep with its stored settings; drop {flags} "
                         f"(only --name, --storage and --address go with --resume)")


def _open_storage(storage: str) -> RunLocation:
    try:  # a local directory or a URI such as s3://bucket/prefix
        location = RunLocation(storage)
        location.exists()
    except (OSError, ValueError) as e:
        raise UsageError(f"--storage {storage}: {str(e).splitlines()[0]}") from None
    return location


def _check_search(spec: ss.SweepSpec) -> None:
    if spec.search == "optuna":
        from orchestrator.tune_mapping import optuna_available
        if not optuna_available():
            raise UsageError("--search optuna needs the optional extra: pip install 'mtgan-sweep[optuna]'")
    if spec.scheduler == "pbt" and spec.search == "optuna":
        raise UsageError("--scheduler pbt cannot be combined with --search optuna (Tune forbids it)")


# ---------------------------------------------------------------------------------- running
def _start_ray(plan: SweepPlan) -> bool:
    """Connect to or start Ray; returns whether we started it (and must shut it down).
    Raises UsageError, with Ray shut down again, where the trials could never be placed."""
    import ray

    if plan.address:
        try:
            ray.init(address=plan.address, log_to_driver=True)
        except Exception as e:  # ConnectionError, RuntimeError, TimeoutError, auth errors...
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            raise UsageError(f"--address {plan.address}: cannot join the Ray cluster "
                             f"({type(e).__name__}: {lines[0] if lines else 'no message'})") from None
        started = True
    elif ray.is_initialized():
        started = False  # e.g. the tests' session Ray: use it
    else:
        # Checked before Ray starts (Ray's start-up lines would join the error line): the
        # embedded Ray gets the CPUs its own count finds (cgroup limits included).
        from ray._private.utils import get_num_cpus
        if plan.cpus > get_num_cpus():
            raise UsageError(f"--cpus-per-trial {plan.cpus:g}: this machine has {get_num_cpus()} CPUs for Ray "
                             f"(trials would wait forever)")
        if plan.gpus > 0:
            import torch
            if torch.cuda.device_count() == 0:
                raise UsageError(f"--gpus-per-trial {plan.gpus}: this machine has no GPU visible to torch "
                                 f"(trials would wait forever); use --gpus-per-trial 0 or --address")
        # Ray's INFO start-up lines only with --verbose (quiet_ray_and_tune)
        ray.init(include_dashboard=False, logging_level=logging.INFO if plan.args.get("verbose") else logging.WARNING)
        started = True
    try:
        _check_trials_fit(plan)
    except UsageError:
        if started:
            ray.shutdown()
        raise
    return started


def _check_trials_fit(plan: SweepPlan) -> None:
    """A trial asking for more than any node has would wait forever: refuse it, unless the joined
    cluster has an autoscaler that may launch a node big enough."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    largest_cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    if plan.cpus > largest_cpus:
        if plan.address and _autoscaler_can_add("CPU", plan.cpus):
            print(f"note: no node has {plan.cpus:g} CPUs yet; the cluster's autoscaler may launch one",
                  file=sys.stderr, flush=True)
        else:
            raise UsageError(f"--cpus-per-trial {plan.cpus:g}: the largest node of the Ray cluster has "
                             f"{largest_cpus:g} CPUs (trials would wait forever)")
    if plan.gpus > 0 and ray.cluster_resources().get("GPU", 0) <= 0:
        if plan.address and _autoscaler_can_add("GPU", plan.gpus):
            # `ray up cluster.yaml` starts GPU worker types at min_workers 0: the autoscaler
            # launches them when the trials ask for GPUs.
            print("note: no GPU node in the cluster yet; its autoscaler will launch GPU workers",
                  file=sys.stderr, flush=True)
        else:
            raise UsageError(f"--gpus-per-trial {plan.gpus}: the Ray cluster has no GPUs (trials would wait forever)")


def _autoscaler_can_add(resource: str, amount: float) -> bool:
    """Whether the joined cluster runs an autoscaler that may add nodes with ``amount`` of
    ``resource`` (Ray's name: "CPU", "GPU")."""
    from ray._private.state import state
    from ray.experimental.internal_kv import _internal_kv_get

    # Autoscaler v2 publishes its node types' resources; the v1 autoscaler (the default)
    # only its status, so there we trust that its config has such worker types.
    max_resources = state.get_max_resources_from_cluster_config()
    if max_resources is not None:
        return max_resources.get(resource, 0) >= amount
    return _internal_kv_get("__autoscaling_status") is not None


def planned_trials_line(plan: SweepPlan) -> str:
    """What the sweep will run, in the header: arms, and the Tune trials they are grouped into."""
    from orchestrator.tune_mapping import grouped, pack_arms

    size = int(plan.spec.arms_per_trial) if grouped(plan.spec) else 1
    if not plan.trials:
        return "optuna arms" + (f" in groups of up to {size}" if size > 1 else "")
    if size == 1:
        return f"{len(plan.trials)} trials"
    return f"{len(plan.trials)} arms in {len(pack_arms(plan.trials, size))} trials of up to {size} arms"


def trial_dirname(trial) -> str:
    return trial.trial_id


def build_tuner(plan: SweepPlan, reuse_actors: bool = True, user_callbacks: list | None = None):
    """The Tuner for a validated plan (a restored one with --resume); Ray must be running.
    ``user_callbacks``: --callback instances, after ours (they see trials.parquet written)."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from orchestrator import tune_mapping
    from orchestrator.callbacks import CheckpointPruner, FlatHyperparameters
    from orchestrator.guard import ResumableCheckpoints, StateSigner, find_callback
    from orchestrator.progress import Progress
    from orchestrator.results import ParquetResults, first_error_line
    from trainables.tune_trainable import multitask_gan_trainable

    trainable = tune.with_resources(multitask_gan_trainable, {"cpu": plan.cpus, "gpu": plan.gpus})
    if plan.resume:
        # Tuner.restore takes no callbacks in Ray 2.60; the RunConfig it restores from tuner.pkl
        # holds our callbacks, which pickle as their constructor arguments without any path
        # (the run may have moved): the sink is told where the run is now.
        tuner = tune.Tuner.restore(plan.run_dir, trainable=trainable, resume_errored=True)
        find_callback(tuner, ParquetResults).relocate(plan.run_dir)
        if find_callback(tuner, ResumableCheckpoints) is None:  # runs started before it existed
            tuner._local_tuner.get_run_config().callbacks.append(ResumableCheckpoints())
        return tuner
    n_tasks = len(plan.task_names)
    param_space, search_alg, num_samples = tune_mapping.tune_search(plan.spec, n_tasks)
    # Progress counts Tune trials: with arms grouped that is the number of groups, not of arms.
    # Planned trials (random, grid) are num_samples; grouped Optuna's num_samples bounds the
    # groups by the arms, which come about arms_per_trial at a time.
    planned = isinstance(search_alg, BasicVariantGenerator)
    total, estimated = num_samples, not planned and tune_mapping.grouped(plan.spec)
    if estimated:
        total = math.ceil(total / int(plan.spec.arms_per_trial))
    tunes_metric = planned and plan.spec.scheduler == "fifo"  # a searcher or scheduler names its own
    user_callbacks = list(user_callbacks or [])
    callbacks = [FlatHyperparameters(plan.task_names),
                 ParquetResults(plan.run_dir, plan.name, plan.task_names, plan.cpus, plan.gpus),
                 CheckpointPruner(plan.spec.keep_checkpoints),
                 Progress(total, plan.spec.iterations, error_line=first_error_line, estimated=estimated), StateSigner(),
                 ResumableCheckpoints(), *user_callbacks]
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=tune_mapping.tune_scheduler(plan.spec), num_samples=num_samples,
            metric=tune_mapping.METRIC if tunes_metric else None,
            mode=tune_mapping.METRIC_MODE if tunes_metric else None,
            # Measured: 16 short trials take 5-9 s with actor reuse, 33 s without.
            reuse_actors=reuse_actors, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            storage_path=plan.storage.location, name=plan.name, callbacks=callbacks,
            verbose=1 if plan.args.get("verbose") else 0,  # orchestrator.progress instead of Tune's table
            failure_config=tune.FailureConfig(max_failures=plan.spec.max_failures),
            # While trials run, --resume needs the latest checkpoint and PBT exploits recent ones;
            # CheckpointPruner trims a finished trial to keep_checkpoints.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=running_checkpoints(plan.spec))),
    )


def summarize(run, top: int = 5) -> str:
    """Where the results are, the best configurations (mean fid over seeds) and what to run next."""
    import pandas as pd

    trials = run.read_table(TRIALS_FILE).to_pandas()
    lines = [f"results: {run.location}  (metrics/ and trials.parquet, schema version {SCHEMA_VERSION})"]
    counts = trials["status"].value_counts().to_dict()
    lines.append("trials: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    done = trials[trials["status"] == TERMINATED]
    if len(done):
        lam_cols = [c for c in trials.columns if c.startswith("lambda_")]
        grouped = done.groupby("config_id").agg(
            mode=("mode", "first"), alpha=("alpha", "first"), **{c: (c, "first") for c in lam_cols},
            seeds=("seed", "nunique"), fid_mean=("fid_mean", "mean")).sort_values("fid_mean")
        shown = pd.concat([grouped.head(top), grouped.loc[grouped.index == INDEPENDENT]])
        shown = shown[~shown.index.duplicated()]
        lines.append("best configurations (fid_mean averaged over seeds, lower is better):")
        lines.extend(shown.to_string(float_format=lambda x: f"{x:.4g}").splitlines())
    # The interpreter that ran the sweep: the command works in a fresh shell, venv activated or not.
    lines.append(f"next: {shlex.join([sys.executable, '-m', 'orchestrator.analyze', run.location])}")
    return "\n".join(lines)


def start_run(plan: SweepPlan, argv: list[str] | None = None) -> None:
    """Create the run directory, an empty trials.parquet (readers find it from the start) and
    sweep.json (a new sweep only, or one whose driver died before writing it)."""
    if not plan.run.exists(SWEEP_FILE):
        plan.run.makedirs()
        plan.run.write_table(trials_schema(plan.task_names).empty_table(), TRIALS_FILE)
        plan.run.write_text(json.dumps(plan.record_dict(argv), indent=1, default=str), SWEEP_FILE)


def checkpoint_mb(trial: dict[str, Any], n_tasks: int, image_shape: tuple[int, ...]) -> float:
    """Size of one of the trial's checkpoints in MB: networks and Adam's two moments (float32),
    plus the kept samples (an upper bound: they are stored compressed)."""
    import numpy as np
    import torch

    from trainables.config import GANConfig
    from trainables.model import build_networks

    cfg = GANConfig.from_dict(ss.gan_fields(trial))
    image_dim = int(np.prod(image_shape))
    nets = build_networks(n_tasks, image_dim, cfg.width, cfg.z_dim, cfg.mode, cfg.share_g, cfg.share_d,
                          [torch.Generator().manual_seed(0)])  # one arm: what one trial trains
    parameters = sum(p.numel() for net in nets for p in net.parameters())
    samples = n_tasks * int(trial.get("samples_kept", 0)) * image_dim
    return (3 * parameters + samples) * 4 / 1e6


def running_checkpoints(spec: ss.SweepSpec) -> int:
    """Checkpoints Tune keeps per running trial: 2, 3 under PBT (Tune warns that fewer can leave
    an exploiting trial without the checkpoint it clones), or keep_checkpoints if more."""
    return max(3 if spec.scheduler == "pbt" else 2, spec.keep_checkpoints)


def disk_estimate(plan: SweepPlan) -> str:
    """The checkpoints' expected disk use, one line (printed before the sweep starts)."""
    from orchestrator.tune_mapping import grouped
    from trainables.data import load_tasks

    tasks = load_tasks(plan.spec.data, samples_per_task=2, test_fraction=plan.spec.fixed.get("test_fraction", 0.25))
    trials = plan.trials or [{**ss.base_trial(plan.spec), **ss.baseline_arm(len(plan.task_names)),
                              "seed": plan.spec.seeds[0]}] * len(plan.spec.seeds) * (plan.spec.num_samples + 1)
    sizes: dict[tuple, float] = {}
    for trial in trials:
        key = tuple(trial.get(k) for k in ("width", "z_dim", "mode", "share_g", "share_d", "samples_kept"))
        if key not in sizes:
            sizes[key] = checkpoint_mb(trial, len(plan.task_names), tasks.image_shape)
    per_trial = [sizes[tuple(t.get(k) for k in ("width", "z_dim", "mode", "share_g", "share_d", "samples_kept"))]
                 for t in trials]
    keep = plan.spec.keep_checkpoints
    total = keep * sum(per_trial)
    size = f"{total:,.0f}" if total >= 10 else f"{total:.2g}"
    unit = "arms" if grouped(plan.spec) else "trials"  # a group's checkpoint holds each arm's state
    return (f"disk: ~{size} MB of checkpoints when done ({len(per_trial)} {unit} x {keep} kept x "
            f"~{sum(per_trial) / len(per_trial):.1f} MB; --keep-checkpoints sets how many), "
            f"plus up to {running_checkpoints(plan.spec)} per running trial")


def quiet_ray_and_tune() -> None:
    """Ray's start-up lines and token-auth notice, Tune's configuration box and hints: silent
    (--verbose keeps them). Tune's old output engine at verbose=0 prints nothing; its new one
    prints a box and a TensorBoard hint naming its temporary staging folder whatever the level."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    if not sys.stdout.isatty():  # workers' lines forwarded to a file or pipe: no raw color codes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)


def resume_command(plan: SweepPlan) -> str:
    command = ["python", "-m", "orchestrator.sweep", "--resume", "--name", plan.name,
               "--storage", plan.storage.location]
    if plan.address:
        command += ["--address", plan.address]
    return " ".join(shlex.quote(part) for part in command)


def main(argv: list[str] | None = None) -> int:
    """The sweep command: exit 0 done, 1 trials failed or the storage failed, 2 bad input (one
    line, nothing written), 130 / 143 interrupted by SIGINT / SIGTERM (resumable)."""
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if "--until-decisive" in argv:
            return _until_decisive(argv)
        return _main(argv)
    except Exception as e:  # anything unforeseen: one line, the traceback in a file
        print(crash_report(e), file=sys.stderr, flush=True)
        return 1


def crash_report(error: BaseException) -> str:
    """Save the full traceback to a file; return the one line to print."""
    import traceback

    directory = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mtgan-sweep"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
        path.write_text("".join(traceback.format_exception(error)))
        where = f"full traceback in {path}"
    except OSError:
        where = "the traceback could not be saved"
    first = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), "")
    return f"error: unexpected {type(error).__name__}{': ' + first[:200] if first else ''} ({where})"


def _until_decisive(argv: list[str]) -> int:
    """--until-decisive: one ordinary sweep per block of seeds (orchestrator.sequential)."""
    from orchestrator import sequential

    try:
        args = build_parser().parse_args(argv)
        if args.resume or args.confirm:
            raise UsageError("--until-decisive starts new blocks; it does not go with --resume or --confirm "
                             "(resume a block by its name instead)")
        seeds = _parse_seeds(args.seeds)
        if not seeds or not args.max_seeds:
            raise UsageError("--until-decisive needs --seeds (the first block) and --max-seeds (the cap)")
        blocks = sequential.seed_blocks(seeds, args.max_seeds)
        storage = _open_storage(args.storage)
        name = args.name or f"{ss.load_space(args.space).name}-{time.strftime('%Y%m%d-%H%M%S')}"
        for k in range(len(blocks)):
            check_name_free(RunLocation(storage.uri(f"{name}-b{k + 1}")), f"{name}-b{k + 1}", storage)
    except (UsageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base = sequential.without_flags(argv, {"--until-decisive": False, "--max-seeds": True, "--seeds": True,
                                           "--name": True})

    def run_block(block: list[int], block_name: str) -> int:
        return _main(base + ["--seeds", ",".join(map(str, block)), "--name", block_name])

    return sequential.run_until_decisive(run_block, storage, name, seeds, args.max_seeds)


def _main(argv: list[str] | None) -> int:
    from orchestrator import signing
    from orchestrator.runlock import RunLocked, run_lock

    # Tune forces an experiment-state snapshot whenever a trial has checkpointed num_to_keep
    # times (so a resume never points at a deleted checkpoint) and warns about each one.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    lock = None
    try:
        args = build_parser().parse_args(argv)
        plan = plan_sweep(args, given=explicit_flags(argv))
        from orchestrator.callbacks import load_callback  # imports Ray: after the cheap checks
        user_callbacks = [load_callback(spec) for spec in (args.callback or [])]
        # One driver per run: taken before anything is written, then the plan's view of the
        # run (name free / sweep to resume) is checked again under it.
        lock = run_lock(plan.run.location if not plan.run.local else plan.run.path, plan.name, plan.run.local)
        if lock is not None:
            lock.acquire()
        from orchestrator import guard  # Ray: only once the command line is known to be good
        from orchestrator.results import ParquetResults

        key = signing.load_key()
        signatures = signing.Signatures()
        if plan.resume:
            if guard.resume_mode(plan.run) == "fresh":
                notes = guard.discard_unstarted_state(plan.run)
                for note in notes:
                    print(note, file=sys.stderr, flush=True)
                print(f"note: sweep {plan.name!r} never got to run a trial; starting it from its {SWEEP_FILE}",
                      file=sys.stderr, flush=True)
                plan = dataclasses.replace(plan, resume=False)
            else:
                signatures = guard.verify_run_state(plan.run, key)
        else:
            check_name_free(plan.run, plan.name, plan.storage)
        if not args.verbose:
            quiet_ray_and_tune()
        started = _start_ray(plan)
    except (UsageError, ValueError, RunLocked, signing.SignatureError) as e:
        if lock is not None:
            lock.release(discard=True)  # nothing written: bad input leaves no trace
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        if lock is not None:
            lock.release(discard=True)
        if e.name not in ("boto3", "botocore"):  # only an s3:// lock's client may be missing
            raise
        print(f"error: locking an object-store run needs {e.name} (pip install {e.name})", file=sys.stderr)
        return 2
    import ray

    try:
        with guard.Interrupts() as interrupts:
            start_run(plan, argv)
            print(f"sweep {plan.name}: {planned_trials_line(plan)}, tasks {','.join(plan.task_names)}, "
                  f"{plan.cpus:g} CPU / {plan.gpus:g} GPU per trial -> {plan.run_dir}", flush=True)
            if not plan.resume:
                print(disk_estimate(plan), flush=True)
            if plan.run.local:
                print(f"TensorBoard: tensorboard --logdir {shlex.quote(plan.run_dir)}", flush=True)
            tuner = build_tuner(plan, user_callbacks=user_callbacks)
            signer = guard.find_callback(tuner, guard.StateSigner)
            signer.start(key, plan.run, signatures)
            guard.sign_tuner_state(tuner, plan.run, signer)
            results = tuner.fit() if interrupts.received is None else None
        if started:  # our own Ray: its workers' end-of-run noise is not the user's business
            guard.stop_worker_output()
        sink_failure = guard.find_callback(tuner, ParquetResults).failure
        if sink_failure is not None:  # Tune logs, and goes on from, a failed final save
            raise sink_failure
        if interrupts.received is not None:
            print(f"sweep {plan.name} interrupted ({signal_name(interrupts.received)}); its trials resume from "
                  f"their last checkpoints with:\n  {resume_command(plan)}", file=sys.stderr, flush=True)
            return guard.Interrupts.exit_code(interrupts.received)
        errors = sum(1 for r in results if r.error is not None)
        print(summarize(plan.run), flush=True)
        if errors:
            print(f"{errors} trial(s) failed; see trials.parquet (column error) and the trial logs", file=sys.stderr)
        return 1 if errors else 0
    except (KeyboardInterrupt, guard.Interrupted) as e:
        signum = getattr(e, "signum", 2)
        print(f"sweep {plan.name} stopped at once ({signal_name(signum)}); resume it with:\n  "
              f"{resume_command(plan)}", file=sys.stderr, flush=True)
        return guard.Interrupts.exit_code(signum)
    except Exception as e:
        failure = guard.storage_failure(e)
        if failure is None:
            raise
        print(f"error: {plan.run.location}: {failure.strerror or failure} -- the sweep stopped; results "
              f"written so far are whole. Free space (or fix the storage), then resume with: "
              f"{resume_command(plan)}", file=sys.stderr, flush=True)
        return 1
    finally:
        if lock is not None:
            lock.release()
        if started:
            ray.shutdown()


def signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


if __name__ == "__main__":
    sys.exit(main())
