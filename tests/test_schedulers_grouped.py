"""Schedulers on Tune trials that train groups of arms: ASHA decides per arm (real Ray, Tune,
training and Parquet), and its rung records (plain Python) halve as ASHA does."""
from __future__ import annotations

import contextlib
import pickle
import io

import numpy as np
import pytest
import torch

import orchestrator
from orchestrator.schema import RunLocation
from orchestrator.sweep import main
from orchestrator.testing import read_run, write_space
from orchestrator.trained import checkpoints
from trainables.halving import RungRecords


def test_rung_records_halve_arms_that_arrive_together_and_judge_latecomers_against_them():
    records = RungRecords(max_t=8, grace_period=1, reduction_factor=2)
    assert records.milestones == [1, 2, 4]
    assert records.judge(3, {"a": 9.0}) == []  # not a rung: no decision
    stopped = records.judge(1, {f"x{k}": float(k) for k in range(8)})
    assert stopped == ["x4", "x5", "x6", "x7"]  # lower is better: the worse half stops
    assert records.judge(1, {"late": 1.5}) == []  # better than the median of the nine
    assert records.judge(1, {"later": 6.5}) == ["later"]
    assert records.judge(1, {"x5": 0.0, "x1": 99.0}) == ["x5"]  # judged once: the same answer again
    assert records.judge(1, {"nan": float("nan")}) == ["nan"]


@pytest.fixture(scope="module")
def asha_run(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("asha")
    space = write_space(tmp, "asha", seeds=[0, 1], num_samples=4, iterations=4,
                        sharing={"modes": ["soft"], "alpha": {"loguniform": [0.3, 300.0]},
                                 "lambdas": {"dirichlet": 1.0}})
    storage = tmp / "results"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["--space", space, "--scheduler", "asha", "--arms-per-trial", "5",
                     "--storage", str(storage), "--name", "asha"]) == 0
    return storage / "asha", printed.getvalue()


def test_asha_stops_arms_of_a_group_at_rungs_and_never_a_baseline(asha_run):
    metrics, trials, record = read_run(asha_run[0])
    assert len(trials) == len(record["trials"]) == 2 * 5 and trials["trial_id"].is_unique
    assert trials.groupby("group_id").size().tolist() == [5, 5]  # one group per seed (capped pool)
    assert set(trials["status"]) == {"TERMINATED"}
    baselines = trials[trials["mode"] == "independent"]
    assert len(baselines) == 2 and (baselines["iterations"] == 4).all()
    stopped = trials[trials["iterations"] < trials["iterations_planned"]]
    # each group's first rung halves its four shared arms at least against themselves
    assert len(stopped) >= 4 and set(stopped["mode"]) == {"soft"}
    assert set(stopped["iterations"]) <= {1, 2}  # ASHA's rungs below max_t = 4
    # one row per (arm, iteration, task), up to where each arm ended, the last one final
    assert not metrics.duplicated(["trial_id", "iteration", "task"]).any()
    done = trials.set_index("trial_id")["iterations"]
    assert (metrics.groupby("trial_id")["iteration"].max() == done.loc[metrics["trial_id"].unique()]).all()
    assert (metrics.groupby("trial_id").size() == done * len(record["tasks"])).all()
    last = metrics.merge(done.rename("done"), left_on="trial_id", right_index=True)
    assert (last["final"] == (last["iteration"] == last["done"])).all()
    # the progress display names each stopped arm as it stops
    for row in stopped.to_dict("records"):
        assert f"stopped early at iteration {row['iterations']}/4  (trial {row['trial_id']})" in asha_run[1]


def test_a_stopped_arm_leaves_its_group_and_stays_loadable(asha_run):
    run_dir = asha_run[0]
    _, trials, _ = read_run(run_dir)
    stopped = trials[trials["iterations"] < trials["iterations_planned"]]
    row = stopped.iloc[0]
    # the group trained on without it: its last checkpoint's batched state no longer holds it
    latest = checkpoints(run_dir, row["group_id"])[-1]
    run = RunLocation(str(run_dir))
    with run.fs.open_input_file(f"{latest}/state.pt") as f:
        state = torch.load(io.BytesIO(f.read()), weights_only=True)
    assert int(row["trial_id"].rsplit("-a", 1)[1]) not in state["arm_ids"]
    # ...yet the arm's model, as it was when stopped, loads and reproduces its kept samples
    gan = orchestrator.load_trial(run_dir, row["trial_id"])
    assert gan.step == row["iterations"] * row["steps_per_iteration"]
    kept = np.load(row["samples_path"])
    np.testing.assert_allclose(gan.sample(kept["images"].shape[1]), kept["images"], atol=1e-5)


@pytest.fixture(scope="module")
def pbt_run(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pbt")
    space = write_space(tmp, "pbt", seeds=[0], num_samples=4, iterations=3, keep_checkpoints=3,
                        sharing={"modes": ["soft"], "alpha": {"loguniform": [0.3, 300.0]},
                                 "lambdas": {"dirichlet": 1.0}})
    storage = tmp / "results"
    assert main(["--space", space, "--scheduler", "pbt", "--arms-per-trial", "5",
                 "--storage", str(storage), "--name", "pbt"]) == 0
    return storage / "pbt"


def test_pbt_in_a_group_continues_the_worst_arm_from_a_donor_and_never_touches_the_baseline(pbt_run):
    metrics, trials, record = read_run(pbt_run)
    assert len(trials) == 5 and trials["group_id"].nunique() == 1 and set(trials["status"]) == {"TERMINATED"}
    assert len(metrics) == 5 * 3 * len(record["tasks"])
    assert not metrics.duplicated(["trial_id", "iteration", "task"]).any()
    ran = metrics.drop_duplicates(["trial_id", "iteration"]).pivot(index="trial_id", columns="iteration",
                                                                 values="config_id")
    baseline = trials.loc[trials["mode"] == "independent", "trial_id"].item()
    assert set(ran.loc[baseline]) == {"independent"}
    # exploit after iterations 1 and 2 (every 3 // 4 -> 1), the worst of 4 shared arms each time
    target = ran.index[ran[1] != ran[2]]
    assert len(target) == 1 and target[0] != baseline
    target = target[0]
    # the trials row shows the configuration the arm ended with
    assert trials.set_index("trial_id").loc[target, "config_id"] == ran.loc[target, 3]
    # at the exploit step the target's slice (weights, S, Adam's moments) is a copy of one donor's
    first = checkpoints(pbt_run, trials["group_id"].iloc[0])[0]
    with RunLocation(str(pbt_run)).fs.open_input_file(f"{first}/state.pt") as f:
        state = torch.load(io.BytesIO(f.read()), weights_only=True)
    t = state["arm_ids"].index(int(target.rsplit("-a", 1)[1]))

    def same(a: int, b: int) -> bool:
        tensors = [*state["G"].values(), *state["D"].values(),
                   *(v for opt in ("opt_g", "opt_d") for s in state[opt]["state"].values()
                     for v in s.values() if v.ndim > 0)]
        return all(torch.equal(x[a], x[b]) for x in tensors)

    donors = [a for a in range(len(state["arm_ids"])) if a != t and same(a, t)]
    assert len(donors) == 1
    donor_config, target_config = state["configs"][donors[0]], state["configs"][t]
    assert donor_config["mode"] == "soft" and target_config["lambdas"] == donor_config["lambdas"]
    assert target_config["seed"] == 0 and target_config["alpha"] != donor_config["alpha"]  # explored


def test_optuna_asks_a_groups_configurations_together_and_hears_each_arms_result(ray_local, tmp_path):
    pytest.importorskip("optuna")
    space = write_space(tmp_path, "opt", seeds=[0, 1], num_samples=2, iterations=2)
    storage = tmp_path / "results"
    assert main(["--space", space, "--search", "optuna", "--arms-per-trial", "3",
                 "--storage", str(storage), "--name", "opt"]) == 0
    metrics, trials, record = read_run(storage / "opt")
    assert len(trials) == 2 + 2 * 2 and set(trials["status"]) == {"TERMINATED"}  # baselines + num_samples × seeds
    assert sorted(trials.loc[trials["mode"] == "independent", "seed"]) == [0, 1]
    assert (trials.groupby("group_id")["seed"].nunique() == 1).all()  # one capped pool per group
    assert (trials.groupby("group_id")["mode"].agg(lambda m: ("hard" in set(m)) <= (set(m) == {"hard"}))).all()
    assert trials.groupby("group_id").size().max() > 1 and trials.groupby("group_id").size().max() <= 3
    assert len(metrics) == len(trials) * 2 * len(record["tasks"])
    # Optuna proposed every shared arm and was told its result (the searcher's saved state)
    (state_file,) = (storage / "opt").glob("searcher-state-*.pkl")
    with open(state_file, "rb") as f:
        saved = pickle.load(f)
    study = saved["inner"]._ot_study
    told = sorted((t.params["seed"], round(t.value, 6)) for t in study.trials if t.state.name == "COMPLETE")
    shared = trials[trials["mode"] != "independent"]
    assert told == sorted(zip(shared["seed"], shared["fid_mean"].round(6)))


def test_grouped_optuna_tells_an_arm_asha_stopped_its_result_when_the_group_later_fails():
    """Optuna learns each arm's last fid_mean; a group that fails after ASHA stopped some of its
    arms fails only the arms still training (a stopped arm's result was final)."""
    import dataclasses

    import search_spaces as ss
    from orchestrator.tune_mapping import GroupedOptuna

    class Study:  # records what the wrapped OptunaSearch is told
        def __init__(self) -> None:
            self.told: dict[str, tuple] = {}

        def on_trial_complete(self, trial_id, result=None, error=False) -> None:
            self.told[trial_id] = (result, error)

    study = Study()
    searcher = GroupedOptuna(study, dataclasses.replace(ss.load_space("smoke"), arms_per_trial=3), 2)
    searcher.members["g"] = [None, "o1", "o2", "o3"]  # a baseline and three Optuna trials
    searcher.on_trial_result("g", {"arms": ({"arm": 0, "fid_mean": 9.0}, {"arm": 1, "fid_mean": 5.0, "stopped": True},
                                            {"arm": 2, "fid_mean": 4.0}, {"arm": 3, "diverged": True})})
    searcher.on_trial_complete("g", error=True)
    assert study.told == {"o1": ({"fid_mean": 5.0}, False), "o2": (None, True), "o3": (None, True)}
