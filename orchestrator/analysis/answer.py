"""The answer a researcher acts on: per data regime (``samples_per_task``, each analysed on its
own), the primary family of orchestrator.analysis.inference (each task's pooled benefit on the log
ratio, Student t over seeds, Holm over the tasks), the best configuration per task as exploratory
evidence, the seeds a 5% and a 10% effect need at the noise measured, and which arms copy their
training images (nn_ratio)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.analysis import inference
from orchestrator.analysis.inference import Test
from orchestrator.analysis.load import RunData
from orchestrator.analysis.pairing import Pairing, baseline_values
from orchestrator.schema import INDEPENDENT, SOFT, direction

ALL_IMAGES = "all"


@dataclass(frozen=True)
class RegimeAnswer:
    """One data regime's primary family and what goes with it."""

    regime: str                          # samples_per_task ("all": uncapped)
    tests: list[Test]                    # one per task, evidence "pooled"
    best: list[Test]                     # one per task: its best configuration, evidence "exploratory"
    best_labels: list[str]               # the configuration each best test is about
    best_ids: list[str]                  # its config_id (what a confirmation run re-runs)
    seeds_needed: dict[str, dict[float, int]]  # per task, per effect (0.05, 0.10): seeds for 80% power
    n_configs: int
    per_seed: dict[str, np.ndarray]      # per task, the per-seed pooled log ratios the tests use
    curves: dict[str, inference.Curve | None] = field(default_factory=dict)  # per task: log ratio vs log10 α


@dataclass(frozen=True)
class Confirmed:
    """Per task, the configuration an exploration chose, judged on a confirmation run's fresh seeds
    alone (Holm over the tasks confirmed): unbiased, evidence "confirmed"."""

    tests: list[Test]
    labels: list[str]
    explore_runs: list[str]


@dataclass(frozen=True)
class Answer:
    regimes: list[RegimeAnswer]
    copying: pd.DataFrame  # arm, task, regime, nn_ratio (median over seeds), copies (bool)
    metric: str
    confirmed: Confirmed | None = None
    test: str = "t"  # the primary family's test over seeds (inference.TESTS)

    @property
    def test_words(self) -> str:
        return ("exact within-seed permutation (sign-flip) test over seeds" if self.test == "signflip"
                else "Student t over seeds")

    def curve_table(self) -> pd.DataFrame:
        """alpha_curve.csv: per (regime, task) the fitted log ratio vs log10 α of soft sharing and its
        pointwise 95% band (seed-clustered), also as the metric's change in %."""
        frames = []
        for r in self.regimes:
            for task, curve in r.curves.items():
                if curve is None:
                    continue
                change = [metric_change(v, self.metric) for v in (curve.fit, curve.high, curve.low)]
                frames.append(pd.DataFrame({
                    "samples_per_task": r.regime, "task": task, "alpha": 10.0 ** curve.log10_alpha,
                    "log_ratio": curve.fit, "log_low": curve.low, "log_high": curve.high,
                    "change_pct": change[0], "change_lo_pct": np.minimum(change[1], change[2]),
                    "change_hi_pct": np.maximum(change[1], change[2]), "degree": curve.degree,
                    "n_seeds": curve.n_seeds}))
        columns = ["samples_per_task", "task", "alpha", "log_ratio", "log_low", "log_high", "change_pct",
                   "change_lo_pct", "change_hi_pct", "degree", "n_seeds"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    def table(self) -> pd.DataFrame:
        """benefit.csv's verdict columns: one row per (regime, task)."""
        rows = []
        for r in self.regimes:
            for t, b, label in zip(r.tests, r.best, r.best_labels):
                change, low, high = change_of(t, self.metric)
                copy = self.copying[(self.copying["task"] == t.name) & (self.copying["regime"] == r.regime)]
                rows.append({
                    "samples_per_task": r.regime, "task": t.name, "verdict": t.verdict, "evidence": t.evidence,
                    "change_pct": change, "change_lo_pct": low, "change_hi_pct": high,
                    "log_ratio": t.estimate, "log_ci_low": t.ci_low, "log_ci_high": t.ci_high,
                    "test": self.test, "test_level": t.level, "p": t.p,
                    "p_signflip": float(inference.signflip_p(r.per_seed[t.name])) if t.n >= 2 else np.nan,
                    "n_seeds": t.n, "seed_sd": t.sd,
                    "seeds_for_5pct": r.seeds_needed[t.name][0.05], "seeds_for_10pct": r.seeds_needed[t.name][0.10],
                    "best_config": label, "best_log_ratio": b.estimate, "best_log_ci_low": b.ci_low,
                    "best_log_ci_high": b.ci_high, "best_evidence": b.evidence,
                    "copying_arms": ";".join(copy.loc[copy["copies"], "arm"]),
                })
        if self.confirmed is not None:
            for t, label in zip(self.confirmed.tests, self.confirmed.labels):
                change, low, high = change_of(t, self.metric)
                rows.append({"samples_per_task": "confirmed", "task": t.name, "verdict": t.verdict,
                             "evidence": t.evidence, "change_pct": change, "change_lo_pct": low,
                             "change_hi_pct": high, "log_ratio": t.estimate, "log_ci_low": t.ci_low,
                             "log_ci_high": t.ci_high, "test": self.test, "test_level": t.level, "p": t.p,
                             "n_seeds": t.n,
                             "seed_sd": t.sd, "best_config": label})
        return pd.DataFrame(rows)


def metric_change(log_ratio: np.ndarray | float, metric: str) -> np.ndarray:
    """The shared arms' metric relative to the baseline's, %, from a log ratio oriented so that
    > 0 = sharing helped (a drop for a lower-is-better metric)."""
    x = np.asarray(log_ratio, dtype=float)
    return inference.metric_change_percent(x) if direction(metric) < 0 else 100.0 * np.expm1(x)


def change_of(test: Test, metric: str) -> tuple[float, float, float]:
    """The shared arms' metric relative to the baseline's, % (estimate, low, high). The log ratio
    is oriented so > 0 = sharing helped: for a lower-is-better metric that is a drop."""
    estimate, a, b = (float(metric_change(v, metric)) for v in (test.estimate, test.ci_low, test.ci_high))
    return estimate, min(a, b), max(a, b)  # a lower-is-better metric's interval turns over


def _regime_of(trials: pd.DataFrame) -> np.ndarray:
    if "samples_per_task" not in trials:
        return np.full(len(trials), ALL_IMAGES, dtype=object)
    cap = pd.to_numeric(trials["samples_per_task"], errors="coerce").to_numpy(float)
    return np.array([ALL_IMAGES if not np.isfinite(c) else str(int(c)) for c in cap], dtype=object)


def _safe_log(values: np.ndarray) -> np.ndarray:
    """log of a positive metric; NaN for a non-positive or missing one (a KID below 0, a diverged trial)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log(values), np.nan)


def pair_log_ratios(data: RunData, pairing: Pairing) -> np.ndarray:
    """(P, K) log(metric_base / metric_shared) for lower-is-better metrics (the inverse for the
    others), metric_base the geometric mean of the seed's baseline replicates at the pair's
    iteration (2-3 per seed by Dunnett's allocation; one works too)."""
    y = baseline_values(data.values, pairing, _safe_log) - _safe_log(data.values[pairing.shared, pairing.iteration])
    return y if direction(data.metric) < 0 else -y


def _per_seed(y: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """(P, K) pair log ratios -> (units, K): each seed's mean over its configurations."""
    return pd.DataFrame(y).groupby(unit).mean().to_numpy()


def copying_table(data: RunData, pairing: Pairing, labels: dict[str, str]) -> pd.DataFrame:
    """Median nn_ratio over seeds per (arm, task, regime) at each trial's last valid iteration;
    empty when the run has no nn_ratio (schema version 1)."""
    columns = ["arm", "task", "regime", "nn_ratio", "copies"]
    if data.nn_ratio is None or np.isnan(data.nn_ratio).all():
        return pd.DataFrame(columns=columns)
    usable = np.flatnonzero(pairing.usable)
    ratio = data.nn_ratio[usable, pairing.last_iter[usable]]  # (U, K)
    config = data.trials["config_id"].astype(str).to_numpy()[usable]
    arm = np.array([labels.get(c, c) for c in config], dtype=object)
    regime = _regime_of(data.trials)[usable]
    rows = []
    for (a, g), idx in pd.DataFrame({"a": arm, "g": regime}).groupby(["a", "g"], sort=False).indices.items():
        for k, task in enumerate(data.tasks):
            values = ratio[idx, k]
            if np.isfinite(values).any():
                rows.append({"arm": a, "task": task, "regime": g, "nn_ratio": float(np.nanmedian(values)),
                             "copies": inference.copies(values)})
    return pd.DataFrame(rows, columns=columns)


def answer(data: RunData, pairing: Pairing, labels: dict[str, str], test: str = "t") -> Answer:
    """The primary family per regime (``test``: t or signflip), its power statement, the
    exploratory best per task and the copying table. ``labels``: configuration id -> its label
    (mode α λ)."""
    y = pair_log_ratios(data, pairing)
    unit = data.trials["baseline_key"].astype(str).to_numpy()[pairing.shared]
    regime = _regime_of(data.trials)[pairing.shared]
    mode = data.trials["mode"].astype(str).to_numpy()[pairing.shared]
    alpha = pd.to_numeric(data.trials["alpha"], errors="coerce").to_numpy(float)[pairing.shared]
    confirms = list(data.confirms) + [None] * (len(data.run_dirs) - len(data.confirms))
    confirm_runs = [i for i, c in enumerate(confirms) if c]
    run_of_pair = (data.trials["run"].to_numpy()[pairing.shared] if "run" in data.trials
                   else np.zeros(len(pairing.shared), int))
    in_confirm = np.isin(run_of_pair, confirm_runs)
    # the exploration's family comes from the exploration runs alone (a confirmation run holds
    # only the chosen configurations: pooling it in would bias the family towards them)
    explore = ~in_confirm if (~in_confirm).any() else np.ones(len(in_confirm), bool)
    regimes = []
    for g in sorted(pd.unique(regime[explore]), key=lambda r: (r == ALL_IMAGES, int(r) if r != ALL_IMAGES else 0)):
        sel = explore & (regime == g)
        per_seed = _per_seed(y[sel], unit[sel])
        tests = inference.family_tests({t: per_seed[:, k] for k, t in enumerate(data.tasks)}, test=test)
        best, best_labels, best_ids = [], [], []
        configs = pairing.config[sel]
        for k, task in enumerate(data.tasks):
            means = pd.Series(y[sel, k]).groupby(configs).mean()
            if means.notna().any():
                c = int(means.idxmax())
                pick = configs == c
                per_seed_best = _per_seed(y[sel][pick, k:k + 1], unit[sel][pick])[:, 0]
                cid = str(pairing.config_ids[c])
            else:
                per_seed_best, cid = np.array([np.nan]), ""
            best.append(inference.exploratory_test(task, per_seed_best))
            best_labels.append(labels.get(cid, cid))
            best_ids.append(cid)
        soft = sel & (mode == SOFT)
        curves = {t: inference.alpha_curve(alpha[soft], y[soft, k], unit[soft]) for k, t in enumerate(data.tasks)}
        regimes.append(RegimeAnswer(g, tests, best, best_labels, best_ids, inference.power_statement(tests),
                                    int(len(np.unique(configs))),
                                    {t: per_seed[:, k] for k, t in enumerate(data.tasks)}, curves))
    confirmed = None
    if confirm_runs and in_confirm.any():
        chosen = {**{t: c for i in confirm_runs for t, c in confirms[i]["chosen"].items()}}
        config_of_pair = pairing.config_ids.to_numpy()[pairing.config].astype(str)
        per_task, names = {}, []
        for key, cid in chosen.items():  # key: a task, or <regime>:<task> with several data regimes
            task = key.rpartition(":")[2]
            if task not in data.tasks:
                continue
            k = data.tasks.index(task)
            pick = in_confirm & (config_of_pair == str(cid))
            per_task[key] = _per_seed(y[pick, k:k + 1], unit[pick])[:, 0] if pick.any() else np.array([])
            names.append(labels.get(str(cid), str(cid)))
        explore_runs = sorted({str(confirms[i].get("explore", "")) for i in confirm_runs})
        confirmed = Confirmed(inference.family_tests(per_task, evidence="confirmed", test=test), names, explore_runs)
    return Answer(regimes, copying_table(data, pairing, {**labels, INDEPENDENT: INDEPENDENT}), data.metric,
                  confirmed, test)


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def answer_lines(result_answer: Answer) -> list[str]:
    """One line per task in words (per regime), the power statement and the copying warning."""
    metric = result_answer.metric
    lines = []
    for r in result_answer.regimes:
        where = f"{r.regime} images per task" if r.regime != ALL_IMAGES else "all images"
        lines.append(f"The answer ({where}; each task's benefit pooled over the {r.n_configs} shared "
                     f"configurations, {metric} ratio to the baseline at the same seed, {result_answer.test_words}, "
                     f"Holm over {len(r.tests)} tasks, family-wise 5%):")
        for t in r.tests:
            need = r.seeds_needed[t.name]
            if t.n < 2:
                lines.append(f"  task {t.name}: unclear — {t.n} seed, no interval; about {need[0.05]} seeds "
                             f"would decide a 5% effect")
                continue
            change, low, high = change_of(t, metric)
            interval = f"{metric} {change:+.1f}% [{low:+.1f}, {high:+.1f}]"
            if t.verdict == "gain":
                lines.append(f"  task {t.name}: sharing helps: {interval}, {t.evidence} over {t.n} seeds")
            elif t.verdict == "negative_transfer":
                lines.append(f"  task {t.name}: sharing hurts: {interval}, {t.evidence} over {t.n} seeds")
            elif need[0.05] <= t.n:
                lines.append(f"  task {t.name}: unclear — {interval} over {t.n} seeds, enough to find a 5% effect "
                             f"with 80% power: an effect, if any, is likely smaller than 5%")
            else:
                more5, more10 = need[0.05] - t.n, max(0, need[0.10] - t.n)
                ten = (f"about {_seeds(more10)} more a 10% effect" if more10 else
                       "the seeds run already suffice for a 10% effect")
                lines.append(f"  task {t.name}: unclear — {interval} over {t.n} seeds; about {_seeds(more5)} more "
                             f"would decide a 5% effect, {ten} (at the noise measured, 80% power)")
        sd = [t.sd for t in r.tests if np.isfinite(t.sd)]
        if sd:
            lines.append(f"  Power: seed-to-seed SD of the log ratio {min(sd):.2f}–{max(sd):.2f}; seeds needed "
                         f"per task for 80% power at 5%/{len(r.tests)}: "
                         + ", ".join(f"task {name} {need[0.05]} / {need[0.10]}"
                                     for name, need in r.seeds_needed.items()) + " (5% / 10% effect).")
    confirmed = result_answer.confirmed
    if confirmed is not None:
        lines.append(f"Confirmed (each task's configuration as the exploration chose it, judged on the "
                     f"confirmation run's fresh seeds alone; Holm over {len(confirmed.tests)} tasks):")
        for t, label in zip(confirmed.tests, confirmed.labels):
            change, low, high = change_of(t, metric)
            words = {"gain": "sharing helps", "negative_transfer": "sharing hurts", "unclear": "unclear"}[t.verdict]
            interval = (f"{metric} {change:+.1f}% [{low:+.1f}, {high:+.1f}]" if np.isfinite(low)
                        else f"{metric} {change:+.1f}% (no interval)")
            regime, _, task = t.name.rpartition(":")
            where = f" ({regime} images)" if regime and regime != ALL_IMAGES else " (all images)" if regime else ""
            lines.append(f"  task {task}{where}: {words}: {interval}, confirmed on {t.n} fresh seeds ({label})")
    copying = result_answer.copying
    if len(copying) and copying["copies"].any():
        flagged = copying[copying["copies"]]
        arms = sorted(set(flagged["arm"]))
        lines.append(f"MEMORISATION WARNING: the samples of {len(arms)} arm(s) copy their training images "
                     f"(median nn_ratio < {inference.COPY_NN_RATIO}: samples sit closer to the training images "
                     f"than unseen real images do; {metric} cannot tell copying from generalising), e.g. "
                     + "; ".join(f"{row.arm} task {row.task} ({row.regime} images) nn_ratio {row.nn_ratio:.2f}"
                                 for row in flagged.head(4).itertuples()) + ".")
    return lines
