"""How the sweep hands its trials to Tune at a cost per trial that does not grow with the sweep:
the schedulers choose exactly what Tune's own do, looking only at live trials, and the planned
trials come out in order from Tune's own variant generator (real Tune objects, no Ray)."""
from __future__ import annotations

import random

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, PopulationBasedTraining

from orchestrator.tune_mapping import (METRIC, METRIC_MODE, TIME_ATTR, BaselineExemptPBT, FirstInFirstOut,
                                       planned_trials_search)

STATUSES = (Trial.PENDING, Trial.RUNNING, Trial.PAUSED, Trial.TERMINATED, Trial.ERROR)


class _Controller:
    """What a scheduler reads from Tune's TuneController: its trial list in Tune's order and
    the live (not terminated) ones."""

    def __init__(self) -> None:
        self.trials: list[Trial] = []
        self.search_alg = None

    def get_trials(self) -> list[Trial]:
        return self.trials

    def get_live_trials(self) -> set[Trial]:
        return {trial for trial in self.trials if trial.status != Trial.TERMINATED}


class _LiveOnly:
    """The same controller for our schedulers: reading every trial ever added is what made the
    driver slow down as a sweep grew, so here it fails."""

    def __init__(self, controller: _Controller) -> None:
        self.controller, self.search_alg = controller, None

    def get_trials(self) -> list[Trial]:
        raise AssertionError("the scheduler read every trial ever added")

    def get_live_trials(self) -> set[Trial]:
        return self.controller.get_live_trials()


def _run_events(ours, tunes, steps: int, rng: random.Random, on_choice=None) -> int:
    """Add trials, change statuses, requeue (Tune moves a requeued trial last and adds it
    again) at random; after every event both schedulers must choose the same trial."""
    controller, compared = _Controller(), 0
    live_only = _LiveOnly(controller)
    for step in range(steps):
        event = rng.random()
        if event < 0.3 or not controller.trials:
            trial = Trial("__fake", config={"trial": {"mode": "soft"}}, trial_id=f"t{step:05d}", stub=True)
            controller.trials.append(trial)
            ours.on_trial_add(live_only, trial)
            tunes.on_trial_add(controller, trial)
        elif event < 0.9:
            rng.choice(controller.trials).set_status(rng.choice(STATUSES))
        else:
            trial = rng.choice(controller.trials)
            controller.trials.remove(trial)
            controller.trials.append(trial)
            trial.set_status(Trial.PENDING)
            ours.on_trial_add(live_only, trial)
            tunes.on_trial_add(controller, trial)
        if on_choice is not None:
            on_choice(controller, rng)
        assert ours.choose_trial_to_run(live_only) is tunes.choose_trial_to_run(controller)
        compared += 1
    return compared


@pytest.mark.parametrize("seed", range(5))
def test_first_in_first_out_chooses_what_tunes_fifo_chooses(seed):
    assert _run_events(FirstInFirstOut(), FIFOScheduler(), 400, random.Random(seed)) == 400


@pytest.mark.parametrize("seed", range(3))
def test_pbt_chooses_what_tunes_pbt_chooses_among_live_trials(seed):
    settings = dict(time_attr=TIME_ATTR, metric=METRIC, mode=METRIC_MODE, perturbation_interval=2,
                    hyperparam_mutations={"trial": {"alpha": [0.1, 1.0]}}, synch=False)
    ours, tunes = BaselineExemptPBT(**settings), PopulationBasedTraining(**settings)

    def trained(controller, rng):  # PBT picks the trial that trained least; ties in Tune's order
        trial = rng.choice(controller.trials)
        time = float(rng.randrange(3))
        ours._trial_state[trial].last_train_time = tunes._trial_state[trial].last_train_time = time

    assert _run_events(ours, tunes, 300, random.Random(seed), on_choice=trained) == 300


def test_scheduler_pickles_without_its_trial_order():
    """Tune pickles the scheduler into tuner.pkl and re-adds every trial on restore."""
    import pickle

    scheduler, controller = FirstInFirstOut(), _Controller()
    trial = Trial("__fake", config={}, trial_id="t0", stub=True)
    scheduler.on_trial_add(controller, trial)
    restored = pickle.loads(pickle.dumps(scheduler))
    assert "_added" not in restored.__dict__
    controller.trials.append(trial)
    restored.on_trial_add(controller, trial)
    assert restored.choose_trial_to_run(controller) is trial


def test_planned_trials_come_out_of_tunes_variant_generator_in_order():
    """Each planned trial once, in order, from a space that does not hold a copy of the plan per trial."""
    from ray.tune.experiment import Experiment
    from ray.tune.impl.placeholder import create_resolvers_map, inject_placeholders

    planned = [{"mode": "soft", "alpha": 0.1 * k, "seed": k} for k in range(50)]
    space, search_alg, num_samples = planned_trials_search(planned)
    assert "grid_search" not in repr(space)  # Tune would copy a grid's whole value list for every trial
    resolvers = create_resolvers_map()
    config = inject_placeholders(space, resolvers)  # as tune.run does with the param space

    def trainable(config):
        pass

    search_alg.add_configurations([Experiment("plan", trainable, config=config, num_samples=num_samples,
                                              storage_path="/tmp/unused")])
    trials = []
    while (trial := search_alg.next_trial()) is not None:
        trial.resolve_config_placeholders(resolvers)
        trials.append(trial)
    assert [trial.config["trial"] for trial in trials] == planned
    assert [trial.config["trial_index"] for trial in trials] == list(range(50))
    assert search_alg.is_finished()
