"""A sweep spec (search_spaces) as Ray Tune objects: param_space, search algorithm, scheduler.

random / grid: the trials are expanded up front (search_spaces.expand_trials) and handed to
Tune as an explicit list (``planned_trials_search``), so a resumed sweep runs exactly the trials
the first run planned, and pairing (every shared configuration at every seed, one independent
arm per seed) holds by construction.

optuna: an OptunaSearch (TPE) with a define-by-run space. Its first trials are the
independent baseline arms, one per (seed, knob combination), given as constants (this is what
``points_to_evaluate`` would do, but Optuna rejects an enqueued ``mode=independent`` that is not
one of the searched choices); every later trial is a shared configuration proposed by TPE
(mode, α log-uniform, λ as per-task weights scaled to sum to n) at a seed and knob values that
TPE also picks (categoricals). Each such trial pairs with the baseline of its own seed and
knobs through ``baseline_key``; the budget is ``num_samples × len(seeds)`` shared trials.

Schedulers: fifo (default); asha stops shared trials early on fid_mean but never a baseline
arm (``BaselineExemptASHA``), so every baseline runs all its iterations and the analysis
compares each pair at the last iteration both reached; pbt mutates α of shared trials and
exploits among them only (baselines are neither copied from nor into). PBT trials change
configuration mid-run, so their rows pair by seed but their config_id is the final one.

Trials that train groups of arms (arms_per_trial > 1) are scheduled per arm, inside the group:
under asha each group judges its shared arms against rung records shared by all groups
(``ArmASHA`` creates them on the driver; tune_trainable drops the stopped arms), under pbt each
group exploits and explores among its own shared arms; Tune runs the groups first-in first-out.
Under optuna, ``GroupedOptuna`` asks for each group's configurations together.
"""
from __future__ import annotations

import pickle
import uuid
from typing import Any

from ray import tune
from ray.tune.search import BasicVariantGenerator, Searcher
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, PopulationBasedTraining, TrialScheduler

import search_spaces as ss
from orchestrator.schema import HARD, INDEPENDENT
from trainables.config import GANConfig
from trainables.tune_trainable import ASHA_KEY, PBT_KEY, gan_config_dict, rung_records, trial_of

METRIC, METRIC_MODE = "fid_mean", "min"
TIME_ATTR = "iteration"


def is_baseline(config: dict[str, Any]) -> bool:
    return trial_of(config).get("mode") == INDEPENDENT


def tune_search(spec: ss.SweepSpec, n_tasks: int) -> tuple[dict[str, Any], Any, int]:
    """(param_space, search_alg or None, num_samples) for Tuner."""
    if spec.search in ("random", "grid"):
        trials = ss.expand_trials(spec, n_tasks)
        if grouped(spec):
            scheduler = ({ASHA_KEY: group_asha_settings(spec)} if spec.scheduler == "asha" else
                         {PBT_KEY: group_pbt_settings(spec)} if spec.scheduler == "pbt" else {})
            trials = [{"arms": group, **scheduler} for group in pack_arms(trials, int(spec.arms_per_trial))]
        return planned_trials_search(trials)
    return _optuna_search(spec, n_tasks)


def grouped(spec: ss.SweepSpec) -> bool:
    """Whether a Tune trial trains a group of arms (arms_per_trial resolved to more than 1)."""
    return spec.arms_per_trial not in (1, "auto")


def asha_settings(spec: ss.SweepSpec) -> dict[str, Any]:
    """ASHA's rungs: every iteration may be a decision point, halving at each (grace 1, factor 2)."""
    return {"max_t": spec.iterations, "grace_period": 1, "reduction_factor": 2}


def group_asha_settings(spec: ss.SweepSpec) -> dict[str, Any]:
    """asha_settings and the name of this sweep's rung-records actor (unique: two sweeps of
    one driver, as in a test session, must not share records)."""
    return {**asha_settings(spec), "records": f"mtgan-rung-records-{uuid.uuid4().hex[:12]}"}


def pbt_interval(spec: ss.SweepSpec) -> int:
    return max(1, spec.iterations // 4)


def group_pbt_settings(spec: ss.SweepSpec) -> dict[str, Any]:
    """PBT inside a group (tune_trainable.exploit_and_explore), set as the one-arm PBT is:
    exploit every quarter of the iterations, the worst quarter from the best, α perturbed."""
    kind, arg = next(iter(spec.alpha.items()))
    return {"interval": pbt_interval(spec), "quantile_fraction": 0.25, "resample_probability": 0.25,
            "alpha": [kind, list(arg)]}


TRIAL_INDEX = "trial_index"  # what Tune's variants run over: trial k of the planned list


class TrialAt:
    """Tune's ``sample_from`` function giving the planned trial at ``config["trial_index"]``.
    Copies of it share the list: Tune deep-copies the param space for every variant."""

    def __init__(self, trials: list[dict[str, Any]]) -> None:
        self.trials = trials

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        return self.trials[config[TRIAL_INDEX]]

    def __deepcopy__(self, memo: dict) -> "TrialAt":
        return self


def planned_trials_search(trials: list[dict[str, Any]]) -> tuple[dict[str, Any], BasicVariantGenerator, int]:
    """(param_space, search_alg, num_samples) that run ``trials`` in order: Tune's variant
    generator given each trial index as a preset point, the trial itself looked up from the index.
    Neither a grid over the trials nor over their indices: Tune deep-copies the param space for
    every variant it generates and turns a grid's values into a list, so either grid cost
    O(trials) per trial (measured: 20,000 trials took 144 s to generate before the first
    started, and the driver's rate fell as trials piled up). A preset point copies a
    two-key space."""
    space = {TRIAL_INDEX: tune.randint(0, max(1, len(trials))), "trial": tune.sample_from(TrialAt(trials))}
    points = [{TRIAL_INDEX: k} for k in range(len(trials))]
    return space, BasicVariantGenerator(points_to_evaluate=points), len(trials)


def pack_arms(trials: list[dict[str, Any]], arms_per_trial: int) -> list[list[dict[str, Any]]]:
    """Trials as groups of at most ``arms_per_trial`` arms that can share one batched model
    (equal ``GANConfig.group_key``: soft and independent arms together, hard apart; with a
    capped ``samples_per_task`` also one seed), in order, the largest groups first: Tune starts
    trials in this order, so the short ones fill the CPUs at the end instead of one long group
    running alone (longest-processing-time-first)."""
    buckets: dict[tuple, list[dict[str, Any]]] = {}
    for trial in trials:
        buckets.setdefault(arm_group_key(trial), []).append(trial)
    groups = [bucket[i:i + arms_per_trial] for bucket in buckets.values()
              for i in range(0, len(bucket), arms_per_trial)]
    return sorted(groups, key=len, reverse=True)  # stable: in order within a size


def arm_group_key(trial: dict[str, Any]) -> tuple:
    """Arms with equal keys can train in one group (``GANConfig.group_key``)."""
    config = GANConfig.from_dict(gan_config_dict(trial))
    # A capped training pool is drawn per seed (data.load_tasks' subset_seed) and a group
    # trains on one pool: then only arms of one seed share a group.
    return config.group_key(), config.seed if config.samples_per_task is not None else None


def optuna_available() -> bool:
    try:
        import optuna  # noqa: F401
    except ImportError:
        return False
    return True


class OptunaSpace:
    """Optuna define-by-run space (a class, not a closure: Tune pickles the searcher into its
    experiment checkpoint). Trials numbered below ``len(baselines)`` are the baseline arms."""

    def __init__(self, spec: ss.SweepSpec, n_tasks: int, with_baselines: bool = True) -> None:
        # Grouped, GroupedOptuna adds the baselines itself (into groups of their seed).
        self.baselines = [{**knobs, **ss.baseline_arm(n_tasks), "seed": int(seed)}
                          for knobs in ss.knob_combinations(spec) for seed in spec.seeds] if with_baselines else []
        self.n_tasks = n_tasks
        self.modes, self.seeds, self.knobs = list(spec.modes), list(spec.seeds), dict(spec.knobs)
        self.alpha_kind, self.alpha_arg = next(iter(spec.alpha.items()))
        self.lam_kind, self.lam_arg = next(iter(spec.lambdas.items()))

    def __call__(self, trial) -> dict[str, Any]:
        if trial.number < len(self.baselines):
            return dict(self.baselines[trial.number])
        out: dict[str, Any] = {"mode": trial.suggest_categorical("mode", self.modes),
                               "seed": trial.suggest_categorical("seed", self.seeds)}
        for key in sorted(self.knobs):
            out[key] = trial.suggest_categorical(key, self.knobs[key])
        if self.alpha_kind == "loguniform":
            alpha = trial.suggest_float("alpha", self.alpha_arg[0], self.alpha_arg[1], log=True)
        else:
            alpha = trial.suggest_categorical("alpha", [float(a) for a in self.alpha_arg])
        out["alpha"] = 0.0 if out["mode"] == HARD else alpha
        if self.lam_kind == "equal":
            out["lambdas"] = [1.0] * self.n_tasks
            return out
        # Raw weights; the trainable scales them to sum to n. TPE cannot sample a Dirichlet, so
        # a Dirichlet space becomes normalised uniform weights (covering the same simplex).
        log = self.lam_kind == "loguniform"
        lo, hi = self.lam_arg if log else (1e-3, 1.0)
        for i in range(self.n_tasks):
            out[f"lambda_{i}"] = trial.suggest_float(f"lambda_{i}", lo, hi, log=log)
        return out


def _optuna_search(spec: ss.SweepSpec, n_tasks: int) -> tuple[dict[str, Any], Any, int]:
    if not optuna_available():
        raise ValueError("--search optuna needs the optional extra: pip install 'mtgan-sweep[optuna]'")
    from ray.tune.search.optuna import OptunaSearch

    space = OptunaSpace(spec, n_tasks, with_baselines=not grouped(spec))
    searcher = OptunaSearch(space=space, metric=METRIC, mode=METRIC_MODE, seed=spec.space_seed)
    if not grouped(spec):
        return ss.base_trial(spec), searcher, len(space.baselines) + spec.num_samples * len(spec.seeds)
    grouped_searcher = GroupedOptuna(searcher, spec, n_tasks)
    # Tune asks until the searcher says FINISHED; at most one group per arm.
    return {}, grouped_searcher, grouped_searcher.arms_left


class GroupedOptuna(Searcher):
    """Optuna (TPE) asking for a group's configurations together: each Tune trial is a group of
    up to arms_per_trial arms drawn from the wrapped OptunaSearch with the group's seed and knobs
    fixed (``enqueue_trial`` with those values; TPE samples mode, α and λ), the seed and knobs
    taking turns over the groups. Each (seed, knobs) baseline opens the first group of its seed
    and knobs and is not an Optuna trial. An arm that cannot share the group's model (a hard arm
    among soft ones) waits for a later group of its kind. When the group ends, each arm's last
    fid_mean is told to Optuna as that arm's result (failed if it diverged or the group failed).
    The budget is the one-arm sweep's: num_samples × seeds shared arms."""

    def __init__(self, inner, spec: ss.SweepSpec, n_tasks: int) -> None:
        super().__init__(metric=METRIC, mode=METRIC_MODE)
        self.inner, self.size, self.base = inner, int(spec.arms_per_trial), ss.base_trial(spec)
        self.cells = [(int(seed), knobs) for knobs in ss.knob_combinations(spec) for seed in spec.seeds]
        self.turn, self.asked, self.budget = 0, 0, spec.num_samples * len(spec.seeds)
        self.waiting: dict[tuple, list[tuple[str | None, dict[str, Any]]]] = {}  # key -> (optuna id, arm)
        for seed, knobs in self.cells:
            baseline = {**self.base, **knobs, **ss.baseline_arm(n_tasks), "seed": seed}
            self.waiting.setdefault(arm_group_key(baseline), []).append((None, baseline))
        self.scheduler = {ASHA_KEY: group_asha_settings(spec)} if spec.scheduler == "asha" else {}
        self.members: dict[str, list[str | None]] = {}  # Tune trial id -> each arm's Optuna id (None: baseline)
        self.last: dict[str, dict[int, dict[str, Any]]] = {}  # Tune trial id -> arm -> its last entry

    @property
    def arms_left(self) -> int:
        return self.budget - self.asked + sum(len(v) for v in self.waiting.values())

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        seed, knobs = self.cells[self.turn % len(self.cells)]
        self.turn += 1
        while self.asked < self.budget and max(map(len, self.waiting.values()), default=0) < self.size:
            self.inner._ot_study.enqueue_trial({"seed": seed, **knobs})  # the group's seed and knobs
            optuna_id = f"arm{self.asked}"
            arm = {**self.base, **self.inner.suggest(optuna_id)}
            self.asked += 1
            self.waiting.setdefault(arm_group_key(arm), []).append((optuna_id, arm))
        full = [key for key, arms in self.waiting.items() if len(arms) >= self.size]
        key = full[0] if full else max(self.waiting, key=lambda k: len(self.waiting[k]), default=None)
        if key is None or not self.waiting[key]:
            return Searcher.FINISHED
        group, self.waiting[key] = self.waiting[key][:self.size], self.waiting[key][self.size:]
        if not self.waiting[key]:
            del self.waiting[key]
        self.members[trial_id] = [optuna_id for optuna_id, _ in group]
        return {"arms": [arm for _, arm in group], **self.scheduler}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        for entry in result.get("arms", []):
            self.last.setdefault(trial_id, {})[entry["arm"]] = entry

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result:
            self.on_trial_result(trial_id, result)
        last = self.last.pop(trial_id, {})
        for arm, optuna_id in enumerate(self.members.pop(trial_id, [])):
            if optuna_id is None:
                continue
            entry = last.get(arm)
            # An arm ASHA stopped had its result before its group failed: tell that, not a failure.
            ok = entry is not None and not entry.get("diverged") and (not error or bool(entry.get("stopped")))
            self.inner.on_trial_complete(optuna_id, {METRIC: entry[METRIC]} if ok else None, error=not ok)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class LiveTrialsInOrder:
    """Mixin for a Tune scheduler: choose the next trial among the live (not terminated) ones,
    in the order Tune added them, as Tune's own choice does over all trials. Tune 2.60's
    FIFOScheduler (and ASHA, PBT) scan every trial ever added at every step, so the driver
    slowed as finished trials piled up: O(trials) per step, O(trials²) per sweep
    (bench/bench_driver_scale.py). A requeued trial goes last, as it does in Tune's list."""

    def on_trial_add(self, tune_controller, trial) -> None:
        self.__dict__.setdefault("_added", {})[trial.trial_id] = self.__dict__.setdefault("_adds", 0)
        self._adds += 1
        super().on_trial_add(tune_controller, trial)

    def __getstate__(self) -> dict[str, Any]:  # Tune re-adds every trial on restore
        state = super().__getstate__()
        return {k: v for k, v in (state or self.__dict__).items() if k not in ("_added", "_adds")}

    def _live_in_order(self, tune_controller, statuses: tuple[str, ...]) -> list | None:
        """Live trials with one of ``statuses`` in Tune's order; None if one was never added."""
        added = self.__dict__.get("_added", {})
        live = [trial for trial in tune_controller.get_live_trials() if trial.status in statuses]
        if any(trial.trial_id not in added for trial in live):
            return None
        return sorted(live, key=lambda trial: added[trial.trial_id])

    def choose_trial_to_run(self, tune_controller):
        """The first pending trial, else the first paused one (FIFOScheduler's choice)."""
        ordered = self._live_in_order(tune_controller, (Trial.PENDING, Trial.PAUSED))
        if ordered is None:
            return super().choose_trial_to_run(tune_controller)
        return min(ordered, key=lambda trial: trial.status != Trial.PENDING, default=None)


class FirstInFirstOut(LiveTrialsInOrder, FIFOScheduler):
    """Tune's FIFOScheduler, at a cost per step that does not grow with finished trials."""


class BaselineExemptASHA(LiveTrialsInOrder, AsyncHyperBandScheduler):
    """ASHA that never stops (nor ranks) an independent baseline arm: stopping baselines early
    would leave shared trials without a full-length partner and bias the comparison."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if is_baseline(trial.config):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class ArmASHA(LiveTrialsInOrder, FIFOScheduler):
    """ASHA for trials that train groups of arms: the decisions are per arm, made inside each
    group against rung records that every group shares (trainables.halving, through the Ray
    actor ``tune_trainable.rung_records`` named in each group's config), so Tune itself runs
    the groups first-in first-out. This scheduler owns the records: it creates the actor on
    the driver when the first trial is added (again after a --resume), so it lives as long as
    the sweep's driver."""

    def __init__(self) -> None:
        super().__init__()
        self._records = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles the scheduler into tuner.pkl: no actor handle
        return {**super().__getstate__(), "_records": None}

    def on_trial_add(self, tune_controller, trial) -> None:
        settings = trial_of(trial.config).get(ASHA_KEY)
        if self._records is None and settings:
            self._records = rung_records(settings)
        super().on_trial_add(tune_controller, trial)


class BaselineExemptPBT(LiveTrialsInOrder, PopulationBasedTraining):
    """PBT whose population is the shared trials only: a baseline arm never records a score,
    so it is never in a quantile (never exploited, never a donor) and never mutated."""

    def choose_trial_to_run(self, tune_controller):
        """PBT's choice (the pending or paused trial that trained least, ties in Tune's order)
        among the live trials."""
        ordered = self._live_in_order(tune_controller, (Trial.PENDING, Trial.PAUSED))
        if ordered is None:
            return PopulationBasedTraining.choose_trial_to_run(self, tune_controller)
        if self._synch:
            ordered = [t for t in ordered if self._trial_state[t].last_train_time < self._next_perturbation_sync]
        return min(ordered, key=lambda trial: self._trial_state[trial].last_train_time, default=None)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if is_baseline(trial.config):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def tune_scheduler(spec: ss.SweepSpec) -> TrialScheduler:
    if spec.scheduler == "asha" and grouped(spec):
        return ArmASHA()
    if spec.scheduler == "asha":
        return BaselineExemptASHA(time_attr=TIME_ATTR, metric=METRIC, mode=METRIC_MODE, **asha_settings(spec))
    if spec.scheduler == "pbt" and grouped(spec):
        return FirstInFirstOut()  # the population is each group's, exploited inside it (group_pbt_settings)
    if spec.scheduler == "pbt":
        if spec.search == "optuna":
            raise ValueError("--scheduler pbt cannot be combined with --search optuna (Tune forbids it)")
        kind, arg = next(iter(spec.alpha.items()))
        alpha = tune.loguniform(*arg) if kind == "loguniform" else tune.choice(arg)
        return BaselineExemptPBT(time_attr=TIME_ATTR, metric=METRIC, mode=METRIC_MODE,
                                 perturbation_interval=pbt_interval(spec),
                                 hyperparam_mutations={"trial": {"alpha": alpha}}, quantile_fraction=0.25,
                                 synch=False)
    return FirstInFirstOut()
