"""End-to-end sweeps on a real local Ray: real Tune, real training, real Parquet."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

import search_spaces as ss
from orchestrator.sweep import main
from orchestrator.testing import read_run, write_space

TUNE_KEYS = ("seed", "mode", "alpha", "data", "samples_per_task", "width", "batch_size", "steps_per_iteration")


def test_smoke_sweep_end_to_end(ray_local, tmp_path, capsys):
    storage = tmp_path / "results"
    assert main(["--space", "smoke", "--storage", str(storage), "--name", "smoke"]) == 0
    out = capsys.readouterr().out
    run_dir = storage / "smoke"
    metrics, trials, record = read_run(run_dir)
    planned = record["trials"]
    tasks = record["tasks"]
    spec = ss.load_space("smoke")

    # one metrics row per (trial, iteration, task), none doubled
    assert len(trials) == len(planned) == len(spec.seeds) * (spec.num_samples + 1)
    assert len(metrics) == len(planned) * spec.iterations * len(tasks)
    assert not metrics.duplicated(["trial_id", "iteration", "task"]).any()
    assert set(trials["status"]) == {"TERMINATED"}
    assert (trials["iterations"] == spec.iterations).all()
    assert metrics["schema_version"].eq(2).all() and trials["schema_version"].eq(2).all()
    # schema 2 for SQL users: a UTC timestamp, the last planned iteration's rows flagged final
    assert str(metrics["timestamp"].dtype).startswith("datetime64") and str(metrics["timestamp"].dt.tz) == "UTC"
    assert (metrics["final"] == (metrics["iteration"] == spec.iterations)).all()
    assert set(trials["arch"]) == {"mlp"}  # 8×8 digits: the arch by image size
    assert metrics["nn_ratio"].notna().all() and (metrics["nn_ratio"] > 0).all()  # copying measured
    assert trials["group_id"].isna().all() and metrics["group_id"].isna().all()  # one arm per trial on CPU
    assert np.isfinite(metrics[["fid", "kid", "g_loss", "d_loss"]].to_numpy()).all()

    # the config columns are what was sampled (order-free: match on config_id + seed)
    by_key = {(t["config_id"], t["seed"]): t for t in planned}
    for row in trials.to_dict("records"):
        trial = by_key[(row["config_id"], row["seed"])]
        for key in TUNE_KEYS:
            if key == "alpha" and row["mode"] == "hard":  # recorded as the α → ∞ limit hard sharing is
                assert row[key] == math.inf
                continue
            assert row[key] == trial[key], key
        assert [row[f"lambda_{t}"] for t in tasks] == trial["lambdas"]
        assert row["baseline_key"] == trial["baseline_key"]
        assert row["cpus"] == 1.0 and row["gpus"] == 0.0 and row["node_ip"] and row["hostname"]
        images = np.load(row["samples_path"])
        assert images["images"].shape == (len(tasks), spec.samples_kept, 1, 8, 8)
        assert list(images["tasks"]) == tasks
        last = metrics[(metrics.trial_id == row["trial_id"]) & (metrics.iteration == spec.iterations)]
        assert math.isclose(row["fid_mean"], last["fid"].mean())

    # the α=0 independent arm is present for every seed, and every shared trial has its partner
    baselines = trials[trials["mode"] == "independent"]
    assert Counter(baselines["seed"]) == {s: 1 for s in spec.seeds}
    assert (baselines["alpha"] == 0).all() and (baselines["config_id"] == "independent").all()
    assert set(trials["baseline_key"]) == set(baselines["baseline_key"])

    # no half-written files are left, and each trial's per-iteration files were compacted into
    # one; the user is told where results are and what to run next
    assert not [p for p in (run_dir / "metrics").iterdir() if p.name.startswith(".")]
    assert sorted(p.name.split("-")[0] for p in (run_dir / "metrics").iterdir()) == sorted(trials["trial_id"])
    assert f" -m orchestrator.analyze {run_dir}" in out
    assert out.count("  done  (trial ") == len(planned)

    # explore -> confirm: the configurations the smoke run chose, and the baseline, on fresh seeds
    assert main(["--confirm", str(run_dir), "--seeds", "7,8", "--storage", str(storage), "--name", "conf"]) == 0
    _, confirm_trials, confirm_record = read_run(storage / "conf")
    chosen = confirm_record["confirm"]
    assert set(chosen["chosen"]) == set(tasks) and chosen["explore"] == str(run_dir)
    wanted = set(chosen["chosen"].values()) | {chosen["overall"]}
    assert set(confirm_trials["config_id"]) == wanted | {"independent"}
    assert sorted(set(confirm_trials["seed"])) == [7, 8]
    assert set(confirm_trials["status"]) == {"TERMINATED"}
    from orchestrator.analysis import analyze, load_runs

    result = analyze(load_runs([run_dir, storage / "conf"], "fid"))
    assert [t.evidence for t in result.answer.confirmed.tests] == ["confirmed"] * len(tasks)
    assert all(t.n == 2 for t in result.answer.confirmed.tests)


def test_diverged_trial_is_recorded_and_sweep_continues(ray_local, tmp_path):
    # lr=1e10 makes the GAN's losses overflow within two steps
    space = write_space(tmp_path, "diverge", seeds=[0], num_samples=1,
                        knobs={"lr": [0.001, 1.0e10]})
    storage = tmp_path / "results"
    # given as a URI, as a cluster's s3:// storage would be (Tune and the sink go through pyarrow.fs)
    assert main(["--space", space, "--storage", f"file://{storage}", "--name", "div"]) == 0
    metrics, trials, _ = read_run(storage / "div")
    bad = trials[trials["lr"] == 1.0e10]
    good = trials[trials["lr"] == 0.001]
    assert len(bad) == len(good) == 2
    assert set(bad["status"]) == {"DIVERGED"}
    assert bad["error"].str.contains("diverged at step").all()
    assert set(good["status"]) == {"TERMINATED"}
    assert set(metrics["trial_id"]) == set(good["trial_id"])


def test_optuna_with_asha_keeps_baselines_full_length(ray_local, tmp_path):
    space = write_space(tmp_path, "opt", seeds=[0, 1], num_samples=2, iterations=3)
    storage = tmp_path / "results"
    assert main(["--space", space, "--search", "optuna", "--scheduler", "asha",
                 "--storage", str(storage), "--name", "opt"]) == 0
    metrics, trials, _ = read_run(storage / "opt")
    assert len(trials) == 2 + 2 * 2  # one baseline per seed, then num_samples × seeds proposals
    baselines = trials[trials["mode"] == "independent"]
    assert sorted(baselines["seed"]) == [0, 1]
    assert (baselines["iterations"] == 3).all()  # ASHA never stops a baseline arm
    shared = trials[trials["mode"] != "independent"]
    assert set(shared["baseline_key"]) <= set(baselines["baseline_key"])
    for row in shared.to_dict("records"):  # λ normalised to sum to n, as the trainable ran it
        assert math.isclose(row["lambda_0"] + row["lambda_1"], 2.0, abs_tol=1e-4)
    counts = metrics.groupby("trial_id").size()
    assert (counts == trials.set_index("trial_id").loc[counts.index, "iterations"] * 2).all()


def test_pbt_leaves_baselines_alone(ray_local, tmp_path):
    space = write_space(tmp_path, "pbt", seeds=[0, 1], num_samples=3, iterations=4,
                        sharing={"modes": ["soft"], "alpha": {"loguniform": [0.001, 10.0]},
                                 "lambdas": {"dirichlet": 1.0}})
    storage = tmp_path / "results"
    assert main(["--space", space, "--scheduler", "pbt", "--storage", str(storage), "--name", "pbt"]) == 0
    metrics, trials, record = read_run(storage / "pbt")
    assert set(trials["status"]) == {"TERMINATED"} and len(trials) == len(record["trials"])
    assert not metrics.duplicated(["trial_id", "iteration", "task"]).any()
    baselines = trials[trials["mode"] == "independent"]
    planned = [t for t in record["trials"] if t["mode"] == "independent"]
    assert sorted(baselines["seed"]) == sorted(t["seed"] for t in planned)
    for trial_id in baselines["trial_id"]:  # never exploited: all iterations, one configuration
        rows = metrics[metrics.trial_id == trial_id]
        assert sorted(set(rows["iteration"])) == [1, 2, 3, 4] and set(rows["config_id"]) == {"independent"}
    # a PBT trial's row shows the configuration it ended with (what its last rows were made by)
    last = metrics.sort_values("iteration").groupby("trial_id").tail(1).set_index("trial_id")["config_id"]
    assert (trials.set_index("trial_id").loc[last.index, "config_id"] == last).all()
