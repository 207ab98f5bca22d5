"""The answer on synthetic runs with a planted truth: verdicts per task on the log ratio, benefit.csv's
verdict/evidence columns, the copying warning, data regimes analysed on their own, version-1 runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from orchestrator import analysis, testing
from orchestrator.analysis.answer import answer_lines
from orchestrator.report.figures import fig_alpha_answer
from orchestrator.report.render import write_report

PLANTED = {"0": 3.0, "2": -4.0}  # FID units: task 0 gains, task 2 loses, tasks 1 and 3 nothing


@pytest.fixture(scope="module")
def copying_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("answer") / "run"
    testing.write_synthetic_run(run, seeds=8, alphas=(0.01, 0.1, 1.0), benefit=PLANTED, iterations=3,
                                early_stop_fraction=0, diverged_fraction=0, error_fraction=0, samples="none",
                                rng_seed=3, copying_modes=("hard",))
    return run


def test_verdicts_per_task_lead_the_headline_and_fill_benefit_csv(copying_run: Path, tmp_path: Path) -> None:
    result = analysis.analyze(analysis.load_runs([copying_run], "fid"))
    lines = analysis.headline(result)
    assert lines[0].startswith("The answer")
    assert lines[1].startswith("  task 0: sharing helps: fid -") and "pooled over 8 seeds" in lines[1]
    assert lines[3].startswith("  task 2: sharing hurts: fid +")
    assert "unclear" in lines[2] and "unclear" in lines[4]
    paths = write_report(result, tmp_path / "report")
    benefit = pd.read_csv(paths["csv"], dtype={"task": str, "samples_per_task": str})
    assert list(benefit["verdict"]) == ["gain", "unclear", "negative_transfer", "unclear"]
    assert set(benefit["evidence"]) == {"pooled"} and set(benefit["best_evidence"]) == {"exploratory"}
    # verdict and interval agree: a verdict exactly when the interval excludes 0
    decided = (benefit["log_ci_low"] > 0) | (benefit["log_ci_high"] < 0)
    assert list(decided) == list(benefit["verdict"] != "unclear")
    assert (paths["dir"] / "answer.png").stat().st_size > 0
    assert (paths["dir"] / "alpha_answer.png").stat().st_size > 0
    curves = pd.read_csv(paths["dir"] / "alpha_curve.csv", dtype={"task": str, "samples_per_task": str})
    assert len(curves) == len(result.answer.curve_table()) > 0
    assert "The answer" in paths["md"].read_text()


def test_the_signflip_test_gives_the_answer_on_request(copying_run: Path) -> None:
    result = analysis.analyze(analysis.load_runs([copying_run], "fid"), resamples=200, test="signflip")
    assert "sign-flip" in analysis.headline(result)[0]
    table = result.benefit_table
    assert list(table["verdict"]) == ["gain", "unclear", "negative_transfer", "unclear"]
    assert set(table["test"]) == {"signflip"}
    # 8 seeds: exact over 2^7 sign flips, so p is a multiple of 1/128; a decided task sits at the smallest
    assert (table["p"] * 128).round(6).tolist() == (table["p"] * 128).round().tolist()
    assert table.loc[table["verdict"] != "unclear", "p"].tolist() == pytest.approx([1 / 128, 1 / 128])
    assert table["p_signflip"].tolist() == pytest.approx(table["p"].tolist())


def test_a_configuration_whose_samples_copy_is_flagged(copying_run: Path) -> None:
    result = analysis.analyze(analysis.load_runs([copying_run], "fid"))
    flagged = result.answer.copying[result.answer.copying["copies"]]
    assert set(flagged["arm"]) == {"hard"}
    warning = [line for line in answer_lines(result.answer) if line.startswith("MEMORISATION WARNING")]
    assert len(warning) == 1 and "hard task 0" in warning[0]
    assert set(result.benefit_table["copying_arms"]) == {"hard"}


def test_no_warning_without_copying_and_version_1_runs_still_read(tmp_path: Path) -> None:
    run = tmp_path / "v1"
    testing.write_synthetic_run(run, seeds=4, alphas=(0.1,), hard=False, iterations=2, early_stop_fraction=0,
                                diverged_fraction=0, error_fraction=0, samples="none", rng_seed=4)
    result = analysis.analyze(analysis.load_runs([run], "fid"))
    assert not any(line.startswith("MEMORISATION") for line in analysis.headline(result))
    for part in (run / "metrics").glob("part-*.parquet"):  # a version-1 run has no copying columns
        table = pq.read_table(part).drop(["nn_ratio", "copy_ct"])
        table = table.set_column(0, "schema_version", pa_int32_column(table.num_rows, 1))
        pq.write_table(table, part)
    old = analysis.analyze(analysis.load_runs([run], "fid"))
    assert old.answer.copying.empty
    assert [t.verdict for t in old.answer.regimes[0].tests] == [t.verdict for t in result.answer.regimes[0].tests]


def pa_int32_column(n: int, value: int):
    import pyarrow as pa

    return pa.array(np.full(n, value, np.int32))


def test_each_data_regime_is_analysed_on_its_own(tmp_path: Path) -> None:
    run = tmp_path / "regimes"
    # width stands in for the data regime: 64 -> 10 images per task (task 0 gains), 128 -> all (nothing)
    testing.write_synthetic_run(run, seeds=8, alphas=(0.1, 1.0), hard=False, widths=(64, 128),
                                benefit=lambda mode, alpha, lam, k: 0.0, iterations=2, early_stop_fraction=0,
                                diverged_fraction=0, error_fraction=0, samples="none", rng_seed=5)
    trials = pq.read_table(run / "trials.parquet").to_pandas()
    trials["samples_per_task"] = np.where(trials["width"] == 64, 10, None)
    pq.write_table(pq.read_table(run / "trials.parquet").set_column(
        pq.read_table(run / "trials.parquet").schema.get_field_index("samples_per_task"), "samples_per_task",
        _int64(trials["samples_per_task"])), run / "trials.parquet")
    result = analysis.analyze(analysis.load_runs([run], "fid"))
    assert [r.regime for r in result.answer.regimes] == ["10", "all"]
    assert all(t.n == 8 for r in result.answer.regimes for t in r.tests)
    assert list(result.benefit_table["samples_per_task"].astype(str)) == ["10"] * 4 + ["all"] * 4
    assert any(note.startswith("This run has 2 data regimes") for note in result.notes)  # the pooled parts say so


def _int64(values: pd.Series):
    import pyarrow as pa

    return pa.array([None if v is None else int(v) for v in values], pa.int64())


def _width_as_regime(run: Path) -> None:
    """Width stands in for the data regime: 64 -> 10 images per task, 128 -> all."""
    import pyarrow as pa

    table = pq.read_table(run / "trials.parquet")
    table = table.set_column(table.schema.get_field_index("samples_per_task"), "samples_per_task",
                             pa.array([10 if w == 64 else None for w in table["width"].to_pylist()], pa.int64()))
    pq.write_table(table, run / "trials.parquet")


@pytest.mark.parametrize("regimes", [False, True], ids=["one-regime", "two-regimes"])
def test_explore_then_confirm_judges_the_chosen_configurations_on_fresh_seeds_alone(tmp_path: Path,
                                                                                    regimes: bool) -> None:
    import json

    from orchestrator.confirm import chosen_configurations

    planted = {"2": -4.0}  # task 2 loses under every configuration; the others have no effect
    explore, confirm = tmp_path / "explore", tmp_path / "confirm"
    common = dict(alphas=(0.01, 0.1, 1.0), benefit=planted, iterations=2, early_stop_fraction=0,
                  diverged_fraction=0, error_fraction=0, samples="none", widths=(64, 128) if regimes else (64,))
    testing.write_synthetic_run(explore, seeds=8, rng_seed=11, **common)
    if regimes:
        _width_as_regime(explore)
    record = chosen_configurations(str(explore))
    keys = [f"{r}:{t}" for r in ("10", "all") for t in "0123"] if regimes else list("0123")
    assert set(record["chosen"]) == set(keys)
    testing.write_synthetic_run(confirm, seeds=12, rng_seed=12, sweep="confirm", **common)  # same configurations
    if regimes:
        _width_as_regime(confirm)
    trials = pq.read_table(confirm / "trials.parquet")  # fresh seeds: 100.., so new baseline keys
    frame = trials.to_pandas()
    trials = trials.set_column(trials.schema.get_field_index("seed"), "seed", _int64(frame["seed"] + 100))
    import pyarrow as pa

    trials = trials.set_column(trials.schema.get_field_index("baseline_key"), "baseline_key",
                               pa.array(frame["baseline_key"] + "-fresh"))
    pq.write_table(trials, confirm / "trials.parquet")
    sweep = json.loads((confirm / "sweep.json").read_text())
    (confirm / "sweep.json").write_text(json.dumps({**sweep, "confirm": record}))
    result = analysis.analyze(analysis.load_runs([explore, confirm], "fid"))
    confirmed = result.answer.confirmed
    assert [t.evidence for t in confirmed.tests] == ["confirmed"] * len(keys)
    assert [t.n for t in confirmed.tests] == [12] * len(keys)  # the confirmation's seeds alone
    verdicts = {t.name: t.verdict for t in confirmed.tests}
    assert all(verdicts[k] == ("negative_transfer" if k.endswith("2") else "unclear") for k in keys), verdicts
    lines = analysis.headline(result)
    first = "  task 2 (10 images): sharing hurts" if regimes else "  task 2: sharing hurts"
    assert any("confirmed on 12 fresh seeds" in line and line.startswith(first) for line in lines)
    # the exploration's own family still comes from the exploration's 8 seeds
    assert all(t.n == 8 for t in result.answer.regimes[0].tests)


def test_benefit_is_a_curve_over_log_alpha_per_task(tmp_path: Path) -> None:
    run = tmp_path / "curve"
    # task 0 gains most at α = 1 (4 FID units), nothing at α = 0.01 or 100; the others nothing anywhere
    peaked = lambda mode, alpha, lam, k: 4.0 - np.log10(alpha) ** 2 if k == 0 and mode == "soft" else 0.0  # noqa: E731
    testing.write_synthetic_run(run, seeds=12, alphas=(0.01, 0.1, 1.0, 10.0, 100.0), hard=True, benefit=peaked,
                                iterations=2, early_stop_fraction=0, diverged_fraction=0, error_fraction=0,
                                samples="none", rng_seed=9, baselines_per_seed=2)
    result = analysis.analyze(analysis.load_runs([run], "fid"), resamples=200)
    curves = result.answer.curve_table()
    assert set(curves["task"]) == {"0", "1", "2", "3"} and set(curves["degree"]) == {2}
    zero = curves[curves["task"] == "0"]
    peak = zero["alpha"].iloc[int(np.argmax(zero["log_ratio"].to_numpy()))]
    assert 0.2 < peak < 5.0, peak
    near_one = zero.iloc[int(np.argmin(np.abs(np.log10(zero["alpha"].to_numpy()))))]
    assert near_one["log_low"] > 0 and near_one["change_hi_pct"] < 0  # FID lower: the band excludes 0
    flat = curves[curves["task"] == "1"]
    assert ((flat["log_low"] <= 0) & (flat["log_high"] >= 0)).mean() > 0.8
    assert fig_alpha_answer(result).png  # drawn (write_report writes it and alpha_curve.csv: tested above)
