"""The report's tables, as plain rows of text that render.py writes to HTML and Markdown."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from orchestrator.analysis import Analysis, fmt_ci
from orchestrator.analysis.estimates import ALL_SHARED, BEST_MIN_COVERAGE
from orchestrator.analysis.verdicts import GAIN, LOSS, VERDICT_LABELS
from orchestrator.schema import HARD


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    flags: list[str] | None = None  # per row: "", "gain" or "loss" (colours the HTML row)


def format_value(v: object, digits: int = 4) -> str:
    """A table cell: ∞, — for missing, integers as such, floats to ``digits`` significant digits."""
    if isinstance(v, (float, np.floating)) and v == np.inf:
        return "∞"
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}g}"
    return str(v)


def _verdict_text(v: str, n: int) -> str:
    return VERDICT_LABELS[v] + (" (few seeds)" if 2 <= n < 5 and v in (GAIN, LOSS) else "")


def _alpha_text(mode: str, alpha: float) -> str:
    return "∞ (hard sharing: the α → ∞ limit)" if mode == HARD else format_value(alpha)


def build_tables(result: Analysis, top: int) -> dict[str, Table]:
    """Every table of the report by name; ``top`` rows where a table ranks."""
    return {"best": best_configuration_table(result), **summary_tables(result), "configs": configs_table(result, top),
            "trials": trials_table(result, top), **exclusion_tables(result, top)}


def best_configuration_table(result: Analysis) -> Table:
    best, tasks = result.best, result.tasks
    n = int(best["n_pairs"])
    return Table(
        f"Best shared configuration (exploratory): {best['label']}",
        ["task", "benefit [95% CI, optimistic]", "pairs"],
        [[t, fmt_ci(best[f"benefit_{t}"], best[f"lo_{t}"], best[f"hi_{t}"], n), str(n)] for t in tasks]
        + [["ΔMTL (%)", fmt_ci(best["dmtl"], best["dmtl_lo"], best["dmtl_hi"], n), str(n)]],
        f"config_id {best['config_id']}, mode {best['mode']}, α {_alpha_text(best['mode'], best['alpha'])}, "
        f"compared at iteration {format_value(best['iteration'])}, diverged {int(best['n_diverged'])}/"
        f"{int(best['n_trials'])} ({best['diverged_rate']:.0%}). Exploratory: chosen as the highest mean ΔMTL among "
        f"{result.n_eligible} configurations on the same seeds, so its interval is optimistic and it gets no "
        f"gain/negative-transfer verdict; the verdicts come from the pooled estimates below.")


def summary_tables(result: Analysis) -> dict[str, Table]:
    """Pooled over all shared configurations, and by mode: the bootstrap CI next to the headline's
    simultaneous interval and verdict."""
    m = int(result.verdicts["m"].iloc[0])
    out = {}
    for name, frame, title, caption in (
            ("pooled", result.pooled, "All shared configurations pooled",
             "Mean over all shared configurations of the paired benefit, resampling seeds (baseline trials) with "
             "all their pairs: does sharing help on average over the searched space, without selection."),
            ("modes", result.by_mode, "By sharing mode",
             "Soft vs hard sharing, each pooled over its configurations, resampling seeds.")):
        rows, flags = _summary_rows(frame, result.verdicts.set_index(["group", "task"]))
        out[name] = Table(title, ["group", "task", "benefit [95% CI]", f"simultaneous 95% CI (m={m})", "verdict",
                                  "seeds"], rows,
                          caption + f" The verdict uses the simultaneous interval: Student t over seeds at level "
                          f"1 − 0.05/{m} (Bonferroni over the {m} task × group verdicts of the headline), so the "
                          f"chance of any false verdict is ≤ 5%; ΔMTL gets no verdict.", flags)
    return out


def _summary_rows(frame: pd.DataFrame, simultaneous: pd.DataFrame) -> tuple[list[list[str]], list[str]]:
    rows, flags = [], []
    for r in frame.itertuples():
        group = r.group if (r.group, r.task) in simultaneous.index else ALL_SHARED  # one mode: the same
        s = simultaneous.loc[(group, r.task)] if (group, r.task) in simultaneous.index else None
        rows.append([r.group, r.task, fmt_ci(r.benefit, r.ci_low, r.ci_high, r.n),
                     "—" if s is None else fmt_ci(s["benefit"], s["ci_low"], s["ci_high"], int(s["n"])),
                     "—" if s is None else _verdict_text(s["verdict"], int(s["n"])), str(r.n)])
        flags.append("" if s is None else s["verdict"])
    return rows, flags


def configs_table(result: Analysis, top: int) -> Table:
    cfg, tasks = result.configs.head(top), result.tasks
    return Table(
        f"Top {len(cfg)} of {len(result.configs)} shared configurations (by mean ΔMTL over seeds)",
        ["#", "configuration", "config_id", "pairs", "iteration", "diverged", "ΔMTL % [95% CI]"]
        + [f"benefit {t}" for t in tasks],
        [[str(i + 1), r["label"], r["config_id"], str(int(r["n_pairs"])), format_value(r["iteration"]),
          f"{int(r['n_diverged'])}/{int(r['n_trials'])} ({r['diverged_rate']:.0%})",
          fmt_ci(r["dmtl"], r["dmtl_lo"], r["dmtl_hi"], int(r["n_pairs"]))]
         + [fmt_ci(r[f"benefit_{t}"], r[f"lo_{t}"], r[f"hi_{t}"], int(r["n_pairs"])) for t in tasks]
         for i, (_, r) in enumerate(cfg.iterrows())],
        f"All configurations with their statistics are in configs.csv (alpha = inf for hard sharing). Intervals "
        f"are per configuration, before selection. A configuration needs at least "
        f"{BEST_MIN_COVERAGE:.0%} of the pairs of the best-covered one to be chosen as best. 'iteration': all "
        f"pairs of a configuration are compared at the last iteration all of them reached.")


def trials_table(result: Analysis, top: int) -> Table:
    trials, tasks = result.data.trials, result.tasks
    top_pairs = result.pairs.iloc[np.argsort(-result.dmtl)[:top]]
    labels = dict(zip(result.configs["config_id"], result.configs["label"]))
    return Table(
        f"Top {len(top_pairs)} shared trials (by ΔMTL against their own baseline)",
        ["configuration (mode α λ)", "seed", "iteration", "ΔMTL %"] + [f"{result.metric} {t}" for t in tasks]
        + ["trial_id"],
        [[labels.get(p.config_id, p.config_id), format_value(p.seed), str(int(p.iteration)), f"{p.dmtl:+.3g}"]
         + [format_value(result.data.values[p.shared, np.searchsorted(result.data.iterations, p.iteration), k])
            for k in range(len(tasks))] + [str(trials["trial_id"].iloc[p.shared])]
         for p in top_pairs.itertuples()],
        "Single trials: the best of many draws, for inspection, not as evidence.")


def exclusion_tables(result: Analysis, top: int) -> dict[str, Table]:
    """Excluded trials, trials by status, and divergence per configuration."""
    div = result.divergence
    shown = pd.concat([div.iloc[:1], div.iloc[1:][div["n_diverged"].iloc[1:] > 0]
                       .sort_values("diverged_rate", ascending=False).head(top)])
    return {
        "excluded": Table(
            "Excluded trials", ["reason", "shared", "independent"],
            [[r.reason, str(r.shared), str(r.independent)] for r in result.excluded.itertuples()]
            or [["none", "0", "0"]],
            "Excluded trials are left out of the paired statistics. Diverged trials still count in the budget "
            "curve, as draws that produced no model."),
        "status": Table("Trials by status", list(result.status_counts.columns),
                        [[str(v) for v in row] for row in result.status_counts.itertuples(index=False)]),
        "divergence": Table(
            "Divergence per configuration", ["configuration", "config_id", "diverged", "errored", "trials", "rate"],
            [[r.label, r.config_id, str(r.n_diverged), str(r.n_error), str(r.n_trials), f"{r.diverged_rate:.0%}"]
             for r in shown.itertuples()],
            "Divergence is a cost of sharing: the first row is the independent baseline's own rate; the other rows "
            "are the shared configurations with most divergence (all in configs.csv)."),
    }
