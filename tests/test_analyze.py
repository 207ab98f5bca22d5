"""`python -m orchestrator.analyze` on runs in the Parquet results schema (v2; v1: test_schema_versions)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator import analysis, testing
from orchestrator.analyze import main as analyze_main
from orchestrator.schema import DIVERGED
from orchestrator.testing import write_hand_run as _write_hand_run

REPO = Path(__file__).resolve().parents[1]
PLANTED = {"0": 3.0, "1": 0.0, "2": -2.0, "3": 0.0}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "small"
    testing.write_synthetic_run(run, seeds=5, alphas=(0.01, 0.1, 1.0), soft_alpha_zero=True,
                              lambdas=((1, 1, 1, 1), (2, 1, 1, 1)), benefit=PLANTED, iterations=6,
                              running_fraction=0.05, rng_seed=1)
    return run


@pytest.fixture(scope="module")
def small_report(small_run: Path) -> tuple[Path, str]:
    out = small_run / "report"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.analyze", str(small_run)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report"))
    return dst


def _rewrite_trials(run: Path, **changes: object) -> None:
    frame = pq.read_table(run / "trials.parquet").to_pandas()
    for column, value in changes.items():
        frame[column] = value(frame) if callable(value) else value
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), run / "trials.parquet")


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = analyze_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str, pattern: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]


# ---------------------------------------------------------------------------------------------
# pairing
# ---------------------------------------------------------------------------------------------

def test_pairs_by_baseline_key_at_the_configurations_common_iteration(tmp_path: Path) -> None:
    """All pairs of a configuration are compared at the last iteration all of them reached (ASHA
    stops seeds of one configuration at different rungs); another configuration has its own."""
    run = tmp_path / "hand"
    trials = [
        {"trial_id": "base_a", "config_id": "independent", "baseline_key": "A", "mode": "independent"},
        {"trial_id": "base_b", "config_id": "independent", "baseline_key": "B", "mode": "independent", "seed": 1},
        # stopped early at iteration 3; its baseline ran to 5 with a falling fid
        {"trial_id": "soft_a", "config_id": "cfg", "baseline_key": "A", "mode": "soft", "alpha": 0.1},
        {"trial_id": "soft_b", "config_id": "cfg", "baseline_key": "B", "mode": "soft", "alpha": 0.1, "seed": 1},
        {"trial_id": "orphan", "config_id": "cfg", "baseline_key": "C", "mode": "soft", "alpha": 0.1, "seed": 2},
        {"trial_id": "hard_b", "config_id": "cfg2", "baseline_key": "B", "mode": "hard", "seed": 1},
    ]
    curves = {
        "base_a": {"x": [50, 40, 30, 20, 10], "y": [60, 50, 40, 30, 20]},
        "base_b": {"x": [500, 400, 300, 200, 100], "y": [600, 500, 400, 300, 200]},
        "soft_a": {"x": [48, 38, 28], "y": [61, 51, 41]},
        "soft_b": {"x": [490, 390, 290, 190, 90], "y": [590, 490, 390, 290, 190]},
        "orphan": {"x": [1, 1, 1], "y": [1, 1, 1]},
        "hard_b": {"x": [480, 380, 280, 180, 80], "y": [580, 480, 380, 280, 180]},
    }
    _write_hand_run(run, trials, curves)
    result = analysis.analyze(analysis.load_runs([run], "fid"), resamples=2000)
    pairs = result.pairs.set_index(result.data.trials["trial_id"].to_numpy()[result.pairs["shared"]])
    assert set(pairs.index) == {"soft_a", "soft_b", "hard_b"}
    assert result.data.trials["trial_id"].iloc[pairs.loc["soft_a", "base"]] == "base_a"
    assert result.data.trials["trial_id"].iloc[pairs.loc["soft_b", "base"]] == "base_b"
    # soft_b ran to 5, but its configuration is compared where soft_a stopped; hard_b's config reached 5
    assert pairs.loc["soft_a", "iteration"] == 3 and pairs.loc["soft_b", "iteration"] == 3
    assert pairs.loc["hard_b", "iteration"] == 5
    benefit = dict(zip(pairs.index, map(tuple, result.benefit)))
    assert benefit["soft_a"] == pytest.approx((2.0, -1.0))  # at iteration 3, not 10 vs 28
    assert benefit["soft_b"] == pytest.approx((10.0, 10.0))  # 300 - 290 at iteration 3
    assert benefit["hard_b"] == pytest.approx((20.0, 20.0))  # 100 - 80 at iteration 5
    configs = result.configs.set_index("config_id")
    assert configs.loc["cfg", "iteration"] == 3 and configs.loc["cfg2", "iteration"] == 5
    assert configs.loc["cfg2", "alpha"] == np.inf and configs.loc["cfg", "alpha"] == pytest.approx(0.1)
    # ΔMTL of soft_a at iteration 3: (2/30 - 1/40)/2 * 100
    assert result.dmtl[list(pairs.index).index("soft_a")] == pytest.approx((2 / 30 - 1 / 40) / 2 * 100)
    excluded = dict(zip(result.excluded["reason"], result.excluded["shared"]))
    assert excluded == {"unpaired: no independent trial with the same baseline_key": 1}


def test_planted_benefit_recovered_over_200_independent_draws(tmp_path: Path) -> None:
    """200 widths = 200 independent baseline groups, each with one shared config of 10 seeds."""
    run = tmp_path / "draws"
    widths = tuple(range(1, 201))
    truth = testing.write_synthetic_run(run, seeds=10, alphas=(0.1,), hard=False, widths=widths, benefit=PLANTED,
                                      iterations=4, early_stop_fraction=0.3, diverged_fraction=0.0,
                                      error_fraction=0.0, samples="none", rng_seed=5)
    result = analysis.analyze(analysis.load_runs([run], "fid"), resamples=2000)
    configs = result.configs
    assert len(configs) == 200 and (configs["n_pairs"] == 10).all()
    assert truth["benefit"][configs["config_id"].iloc[0]] == list(PLANTED.values())
    for task, planted in PLANTED.items():
        mean, lo, hi = (configs[f"{p}_{task}"].to_numpy() for p in ("benefit", "lo", "hi"))
        covered = ((lo <= planted) & (planted <= hi)).mean()
        assert covered >= 0.90, (task, covered)
        if planted != 0:
            assert (np.sign(mean) == np.sign(planted)).mean() >= 0.9
            flagged = (hi < 0).mean() if planted < 0 else (lo > 0).mean()
            assert flagged >= 0.9, (task, flagged)  # negative transfer of task 2 is found
    zero = np.concatenate([((configs[f"lo_{t}"] > 0) | (configs[f"hi_{t}"] < 0)).to_numpy()
                           for t, v in PLANTED.items() if v == 0])
    assert zero.mean() <= 0.08, zero.mean()


def test_feature_mode_reported_on_its_own_and_kept_off_the_alpha_curve(tmp_path: Path) -> None:
    """Planted: the feature reading helps every task by 4, the parameter-space modes not at all.
    The per-mode table finds the gain in feature alone; feature's α (another scale) never
    joins the soft α curve."""
    run = tmp_path / "feature"
    testing.write_synthetic_run(run, seeds=12, alphas=(0.1, 1.0), feature_alphas=(0.5, 2.0),
                                benefit=lambda mode, alpha, lam, k: 4.0 if mode == "feature" else 0.0,
                                iterations=3, diverged_fraction=0.0, error_fraction=0.0, samples="none", rng_seed=3)
    result = analysis.analyze(analysis.load_runs([run], "fid"), resamples=1000)
    by_mode = result.by_mode[result.by_mode["task"] != "ΔMTL %"].set_index(["group", "task"])
    assert set(by_mode.index.get_level_values(0)) == {"feature", "soft", "hard"}
    for task in ("0", "1", "2", "3"):
        row = by_mode.loc[("feature", task)]
        assert row["ci_low"] > 0 and row["ci_low"] <= 4.0 <= row["ci_high"], row
        for mode in ("soft", "hard"):
            assert abs(by_mode.loc[(mode, task), "benefit"]) < 1.5
    np.testing.assert_array_equal(result.alpha_curve.alphas, [-1.0, 0.1, 1.0])
    assert "feature" in result.budget


# ---------------------------------------------------------------------------------------------
# the headline: verdicts without selection, multiplicity, survivorship, PBT/ASHA, KID
# ---------------------------------------------------------------------------------------------

SOFT_ALPHAS = (0.001, 0.01, 0.1, 1.0, 10.0)


def _sweep_in_memory(rng: np.random.Generator, planted: dict[str, float] | None = None, seeds: int = 8,
                     tasks: tuple[str, ...] = ("0", "1", "2", "3"), metric: str = "fid",
                     level: float = 30.0) -> analysis.RunData:
    """One sweep's results without files: independent + 5 soft (α) + hard configurations × seeds, one
    iteration; metric = level + seed effect - planted benefit (shared arms only) + N(0, 1) per trial."""
    arms = [("independent", 0.0)] + [("soft", a) for a in SOFT_ALPHAS] + [("hard", 0.0)]
    mode = np.repeat([m for m, _ in arms], seeds)
    seed = np.tile(np.arange(seeds), len(arms))
    effect = np.array([(planted or {}).get(t, 0.0) for t in tasks])
    values = (level + rng.normal(0, 5, (seeds, len(tasks)))[seed] - (mode != "independent")[:, None] * effect
              + rng.normal(0, 1, (len(mode), len(tasks))))
    trials = pd.DataFrame({"trial_id": [f"t{i}" for i in range(len(mode))],
                           "config_id": np.repeat(["independent"] + [f"c{i}" for i in range(1, len(arms))], seeds),
                           "baseline_key": [f"b{s}" for s in seed], "status": "TERMINATED", "mode": mode,
                           "alpha": np.repeat([a for _, a in arms], seeds), "seed": seed})
    return analysis.RunData(run_dirs=["memory"], metric=metric, trials=trials, tasks=list(tasks),
                           iterations=np.array([1]), values=values[:, None, :], schedulers=[None])


def _called(lines: list[str], kind: str) -> set[str]:
    """Tasks the headline lists under 'gain' or 'NEGATIVE TRANSFER' (any group)."""
    found: set[str] = set()
    for line in lines:
        if re.match(rf"\s+{kind}\b", line):
            found |= set(re.findall(r"([A-Za-z0-9_-]+) [+-][0-9.e+-]+ \[", line))
    return found


def test_headline_verdicts_not_fooled_by_selection_and_find_a_planted_gain() -> None:
    """6 shared configurations × 4 tasks × 8 seeds, 100 sweeps each: with no effect the headline
    calls a gain or negative transfer in <= 10% of sweeps (the best configuration's own interval
    did in ~28%); a planted gain of 2.5 (pair noise sd 1.4) on task 0 is found in most sweeps."""
    rng = np.random.default_rng(2024)
    false_calls, found, wrong = 0, 0, 0
    for _ in range(100):
        lines = analysis.headline(analysis.analyze(_sweep_in_memory(rng), resamples=200))
        false_calls += bool(_called(lines, "gain") | _called(lines, "NEGATIVE TRANSFER"))
        lines = analysis.headline(analysis.analyze(_sweep_in_memory(rng, {"0": 2.5}), resamples=200))
        found += "0" in _called(lines, "gain")
        wrong += bool(_called(lines, "NEGATIVE TRANSFER") | (_called(lines, "gain") - {"0"}))
    assert false_calls <= 10, false_calls
    assert found >= 80, found
    assert wrong <= 10, wrong


def test_headline_lists_planted_negative_transfer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "neg"
    testing.write_synthetic_run(run, seeds=8, alphas=(0.01, 0.1, 1.0), benefit={"2": -4.0}, iterations=3,
                              early_stop_fraction=0, diverged_fraction=0, error_fraction=0, samples="none",
                              rng_seed=3)
    lines = analysis.headline(analysis.analyze(analysis.load_runs([run], "fid")))
    assert _called(lines, "NEGATIVE TRANSFER") == {"2"}, lines
    assert _called(lines, "gain") == set(), lines
    loss = next(line for line in lines if "NEGATIVE TRANSFER" in line)
    assert "all shared: 2 -" in loss
    best = next(line for line in lines if line.startswith("Best configuration"))
    assert "exploratory" in best and "optimistic" in best and "diverged 0/8" in best


def test_best_configuration_needs_90_percent_of_the_pairs() -> None:
    """A configuration that diverged on 4 of 8 seeds cannot be best on its 4 lucky survivors."""
    data = _sweep_in_memory(np.random.default_rng(0))
    trials = data.trials
    lucky = trials.index[trials["config_id"] == "c3"]
    data.values[lucky] -= 20.0  # far better on every seed ...
    trials.loc[lucky[:4], "status"] = DIVERGED  # ... but half of them diverged
    result = analysis.analyze(data, resamples=200)
    configs = result.configs.set_index("config_id")
    assert configs.loc["c3", "n_pairs"] == 4 and configs.loc["c3", "diverged_rate"] == 0.5
    assert configs.loc["c3", "dmtl"] == configs["dmtl"].max()  # the highest ΔMTL, on its survivors
    assert result.best_config != "c3" and result.n_eligible == 5
    best = next(line for line in analysis.headline(result) if line.startswith("Best configuration"))
    assert "best of 5" in best and "diverged 0/8" in best


def test_kid_delta_mtl_uses_a_stable_denominator() -> None:
    """The unbiased KID of one baseline can be ~0: ΔMTL must not explode on that pair."""
    data = _sweep_in_memory(np.random.default_rng(1), metric="kid", level=30.0)
    data.values *= 1e-3  # KID scale: ~0.03, noise 0.001
    base0 = data.trials.index[(data.trials["mode"] == "independent") & (data.trials["seed"] == 0)][0]
    data.values[base0, 0, 0] = 1e-7  # a near-zero unbiased KID estimate
    result = analysis.analyze(data, resamples=200)
    assert np.isfinite(result.dmtl).all() and np.abs(result.dmtl).max() < 100, np.abs(result.dmtl).max()
    assert any("median independent kid" in note for note in result.notes)
    fid = analysis.analyze(_sweep_in_memory(np.random.default_rng(1)), resamples=200)
    assert not any("median independent" in note for note in fid.notes)  # fid keeps the pair's own baseline


@pytest.mark.parametrize("scheduler", ["pbt", "asha", "fifo"])
def test_scheduler_from_sweep_json(small_run: Path, tmp_path: Path, scheduler: str) -> None:
    """PBT copies weights across seeds: no paired verdicts, said in the headline and the report."""
    run = _copy_run(small_run, tmp_path / scheduler)
    (run / "sweep.json").write_text(json.dumps({"name": "s", "spec": {"name": "s", "scheduler": scheduler}}))
    result = analysis.analyze(analysis.load_runs([run], "fid"), resamples=2000)
    lines = analysis.headline(result)
    assert result.data.schedulers == [scheduler]
    assert (result.pbt_runs == [str(run)]) == (scheduler == "pbt")
    assert any(line.startswith("PBT:") for line in lines) == (scheduler == "pbt")
    assert any(line.startswith("ASHA:") for line in lines) == (scheduler == "asha")
    if scheduler == "pbt":
        assert not any(re.match(r"\s+(gain|NEGATIVE TRANSFER|unclear)", line) for line in lines)
        assert (result.verdicts["verdict"] == analysis.NO_VERDICT_PBT).all()
        assert any("PBT run(s)" in note for note in result.notes)


def test_pooled_runs_and_duplicate_baselines(small_run: Path, tmp_path: Path) -> None:
    other = _copy_run(small_run, tmp_path / "again")
    single = analysis.analyze(analysis.load_runs([small_run], "fid"))
    pooled = analysis.analyze(analysis.load_runs([small_run, other], "fid"))
    assert len(pooled.data.trials) == 2 * len(single.data.trials)
    assert len(pooled.pairs) == 2 * len(single.pairs)
    reasons = dict(zip(pooled.excluded["reason"], pooled.excluded["independent"]))
    assert reasons["duplicate independent trial for a baseline_key and replicate (not used)"] == 5
    assert any("RUNNING" in n for n in single.notes)


# ---------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------

def test_report_files_and_benefit_csv(small_report: tuple[Path, str]) -> None:
    out, stdout = small_report
    for name in ("report.html", "report.md", "benefit.csv", "configs.csv", "benefit.png", "alpha.png",
                 "lambda.png", "modes.png", "budget.png", "curves.png", "samples.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    benefit = pd.read_csv(out / "benefit.csv", dtype={"task": str})
    assert list(benefit.columns[:4]) == ["samples_per_task", "task", "verdict", "evidence"]
    assert list(benefit.columns[-6:]) == ["benefit", "ci_low", "ci_high", "n_pairs", "best_alpha", "best_mode"]
    assert list(benefit["task"]) == list(PLANTED)
    assert benefit["best_mode"].iloc[0] in ("soft", "hard")
    # hard sharing is the α → ∞ limit (the Parquet records α = 0 for it)
    assert (benefit["best_alpha"] == np.inf).all() == (benefit["best_mode"].iloc[0] == "hard")
    assert (benefit["best_alpha"] > 0).all()
    # benefit/CI: all shared configurations pooled (not the best), with the headline's family-wise interval
    configs = pd.read_csv(out / "configs.csv")
    assert (configs.loc[configs["mode"] == "hard", "alpha"] == np.inf).all()
    assert {"diverged_rate", "iteration"} <= set(configs.columns)
    assert (benefit["n_pairs"] == configs["n_pairs"].sum()).all()
    row = benefit.set_index("task")
    for task, planted in PLANTED.items():  # 5 seeds, Bonferroni over 12 tests: wide, but covering the truth
        assert row.loc[task, "ci_low"] < planted < row.loc[task, "ci_high"]
    assert row.loc["0", "benefit"] > 0 and row.loc["2", "benefit"] < 0
    assert "Report:" in stdout and "benefit > 0 means sharing helped" in stdout
    # the answer (a title, one line per task, the power statement) leads, then the secondary lines
    assert stdout.startswith("The answer") and len(stdout.strip().splitlines()) <= 10 + len(PLANTED) + 4


def test_html_is_self_contained(small_report: tuple[Path, str]) -> None:
    out, _ = small_report
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    assert not re.search(r"""src\s*=\s*["'](?!data:)""", page)
    assert set(re.findall(r'href="([^"]*)"', page)) <= {f"#s{i}" for i in range(10)}  # in-page links only
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 6
    assert "positive" in page and "lower is better" in page and "optimistic" in page
    md = (out / "report.md").read_text()
    assert "| group | task | benefit [95% CI] | simultaneous 95% CI (m=12) | verdict | seeds |" in md
    assert "![Budget curve" in md and "exploratory" in md


def test_single_seed_gives_point_estimates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "one"
    testing.write_synthetic_run(run, seeds=1, alphas=(0.1, 1.0), benefit=PLANTED, iterations=3,
                              early_stop_fraction=0, diverged_fraction=0, error_fraction=0, samples="none")
    code, out, err = _run_main([str(run), "--out", str(tmp_path / "rep")], capsys)
    assert code == 0, err
    assert "point estimate" in out
    benefit = pd.read_csv(tmp_path / "rep" / "benefit.csv")
    assert benefit["ci_low"].isna().all() and (benefit["n_pairs"] == 3).all()  # 3 configurations pooled
    assert "point estimate (1 seed, no CI)" in (tmp_path / "rep" / "report.html").read_text()
    assert "no samples" in (tmp_path / "rep" / "report.md").read_text().lower()


def test_missing_samples_file_is_a_note_not_a_crash(small_run: Path, tmp_path: Path) -> None:
    run = _copy_run(small_run, tmp_path / "nosamples")
    _rewrite_trials(run, samples_path=lambda f: str(tmp_path / "gone.npz"))
    assert analyze_main([str(run), "--metric", "kid"]) == 0
    assert "No samples" in (run / "report" / "report.html").read_text()


@pytest.mark.parametrize("tasks,metric", [(("a",), "fid"), (("x", "y", "z"), "precision")])
def test_one_and_three_tasks(tasks: tuple[str, ...], metric: str, tmp_path: Path) -> None:
    """One task (no λ to vary) and three tasks (the λ simplex panel), higher-is-better metric."""
    lambdas = ((1.0,) * len(tasks),) + (((2.0, 1.0, 0.5), (0.5, 1.0, 2.0)) if len(tasks) == 3 else ())
    testing.write_synthetic_run(tmp_path / "run", tasks=tasks, seeds=3, alphas=(0.1,), lambdas=lambdas,
                              benefit={tasks[0]: 5.0}, iterations=3, samples="none")
    assert analyze_main([str(tmp_path / "run"), "--metric", metric]) == 0
    benefit = pd.read_csv(tmp_path / "run" / "report" / "benefit.csv")
    assert len(benefit) == len(tasks) and benefit["benefit"].iloc[0] > 0  # fid down = precision up = helped
    page = (tmp_path / "run" / "report" / "report.html").read_text()
    assert ("λ was not varied" in page) == (len(tasks) == 1)


# ---------------------------------------------------------------------------------------------
# bad input: one line on stderr, exit 2, nothing written
# ---------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.analyze", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_cli_missing_path(tmp_path: Path) -> None:
    proc = _cli(str(tmp_path / "nope"))
    _assert_one_line_error(proc.returncode, proc.stderr, r"does not exist.*orchestrator\.sweep")
    assert proc.stdout == ""


def test_cli_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "stuff.txt").write_text("x")
    proc = _cli(str(tmp_path))
    _assert_one_line_error(proc.returncode, proc.stderr, r"not a sweep run directory")
    assert not (tmp_path / "report").exists()


def test_cli_unknown_metric(small_run: Path) -> None:
    proc = _cli(str(small_run), "--metric", "bleu", "--out", str(small_run / "bad"))
    _assert_one_line_error(proc.returncode, proc.stderr, r"unknown --metric 'bleu'.*fid, kid")
    assert not (small_run / "bad").exists()


def test_storage_dir_instead_of_run_dir_gets_a_hint(small_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run_main([str(small_run.parent)], capsys)
    _assert_one_line_error(code, err, r"did you mean .*small")


def test_empty_metrics_dir(tmp_path: Path, small_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "empty"
    (run / "metrics").mkdir(parents=True)
    shutil.copy(small_run / "trials.parquet", run / "trials.parquet")
    (run / "metrics" / ".tmp-abc.parquet").write_bytes(b"half")  # only an unfinished file: ignored
    code, _, err = _run_main([str(run)], capsys)
    _assert_one_line_error(code, err, r"no metric rows yet")
    assert not (run / "report").exists()


def test_unknown_schema_version(small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(small_run, tmp_path / "v3")
    frame = pq.read_table(run / "trials.parquet")
    frame = frame.set_column(0, "schema_version", pa.array(np.full(frame.num_rows, 3, np.int32)))
    pq.write_table(frame, run / "trials.parquet")
    code, _, err = _run_main([str(run)], capsys)
    _assert_one_line_error(code, err, r"schema_version 3 is unknown")


def test_no_baseline_arm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "nobase"
    testing.write_synthetic_run(run, seeds=2, alphas=(0.1,), include_baseline=False, iterations=2, samples="none")
    code, _, err = _run_main([str(run)], capsys)
    _assert_one_line_error(code, err, r"no baseline arm.*rerun the sweep with the independent arm")


def test_all_trials_diverged(small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(small_run, tmp_path / "div")
    _rewrite_trials(run, status="diverged")
    code, _, err = _run_main([str(run)], capsys)
    _assert_one_line_error(code, err, r"all \d+ trials diverged")


def test_metric_without_values(small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "nolabels"
    testing.write_synthetic_run(run, seeds=2, alphas=(0.1,), iterations=2, samples="none", with_accuracy=False)
    code, _, err = _run_main([str(run), "--metric", "accuracy"], capsys)
    _assert_one_line_error(code, err, r"metric 'accuracy' has no values")


# ---------------------------------------------------------------------------------------------
# the page in a real browser
# ---------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium) - cannot render")
def test_report_renders_in_headless_chromium(small_report: tuple[Path, str], tmp_path: Path) -> None:
    from PIL import Image

    out, _ = small_report
    shot = tmp_path / "shot.png"
    profile = tempfile.mkdtemp(dir=tmp_path)
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,2400",
                           (out / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1200)
    assert pixels.std() > 20  # text, tables and figures, not a blank page
    # the figures are drawn: a good share of rows carry non-white content
    assert (pixels.min(1) < 128).mean() > 0.3


def test_corrupt_and_foreign_metrics_files(small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(small_run, tmp_path / "foreign")
    pq.write_table(pa.table({"x": [1, 2, 3]}), run / "metrics" / "notes.parquet")  # someone else's file
    code, out, err = _run_main([str(run), "--resamples", "2000"], capsys)
    assert code == 0, err
    assert f"warning: ignoring {run / 'metrics' / 'notes.parquet'}: not a metrics file of the sweep" in err

    (run / "metrics" / "notes.parquet").unlink()
    victim = sorted((run / "metrics").glob("part-*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # cut short
    code, _, err = _run_main([str(run)], capsys)
    _assert_one_line_error(code, err, re.escape(f"{victim} cannot be read"))


def test_out_inside_the_runs_metrics_is_refused(small_run: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(small_run, tmp_path / "out")
    code, _, err = _run_main([str(run), "--out", str(run / "metrics" / "report")], capsys)
    _assert_one_line_error(code, err, r"is inside the run's metrics/")
    assert not (run / "metrics" / "report").exists()


def test_never_finished_or_errored_trials_get_no_training_advice(small_run: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(small_run, tmp_path / "err")
    _rewrite_trials(run, status="ERROR", error="OSError: [Errno 28] No space left on device")
    code, _, err = _run_main([str(run)], capsys)
    _assert_one_line_error(code, err, r"all \d+ trials diverged or errored.*Fix the error and .*--resume")
    assert "lr" not in err and "alpha" not in err
