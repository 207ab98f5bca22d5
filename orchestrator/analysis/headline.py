"""The few lines printed to the terminal and shown at the top of the report."""
from __future__ import annotations

import numpy as np

from orchestrator.analysis.answer import answer_lines
from orchestrator.analysis.estimates import DMTL
from orchestrator.analysis.result import Analysis
from orchestrator.analysis.verdicts import NO_VERDICT_PBT, POINT_ESTIMATE, UNCLEAR, VERDICT_LABELS
from orchestrator.schema import INDEPENDENT, better


def fmt_ci(mean: float, lo: float, hi: float, n: int, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if n < 2 or not np.isfinite(lo):
        return f"{mean:+.{digits}g} point estimate (1 seed, no CI)"
    return f"{mean:+.{digits}g} [{lo:+.{digits}g}, {hi:+.{digits}g}]"


VERDICT_TITLES = {**VERDICT_LABELS, UNCLEAR: "unclear (interval spans 0)", POINT_ESTIMATE: "point estimates",
                  NO_VERDICT_PBT: "estimates"}


def headline(result: Analysis) -> list[str]:
    """The few lines printed to the terminal and shown at the top of the report.

    Verdicts (gain / NEGATIVE TRANSFER) come only from estimates without selection (all shared
    configurations pooled, and each mode pooled) with family-wise intervals; the best
    configuration is shown as exploratory, without a verdict."""
    metric = result.metric
    return ((answer_lines(result.answer) if result.answer is not None else [])
            + [f"Metric {metric} ({better(metric)} is better); benefit > 0 means sharing helped."]
            + _verdict_lines(result) + _estimate_lines(result) + _asha_lines(result) + [_divergence_line(result)])


def _verdict_lines(result: Analysis) -> list[str]:
    v = result.verdicts
    groups = list(dict.fromkeys(v["group"]))
    seeds = int(v["n"].iloc[0])
    scope = f"all {len(result.configs)} shared configurations pooled" + (
        f", and each mode pooled: {', '.join(groups[1:])}" if len(groups) > 1 else "")
    if result.pbt_runs:
        lines = [f"PBT: exploit copies weights between seeds, so pairs are not independent: population "
                 f"estimates ({scope}, {seeds} seeds), no verdicts; intervals not valid."]
    elif seeds < 2:
        lines = [f"Point estimates ({scope}; 1 seed, no interval, no verdict):"]
    else:
        rough = f"; only {seeds} seeds, rough" if seeds < 5 else ""
        lines = [f"Verdicts without selection ({scope}); simultaneous 95% intervals (Student t over "
                 f"{seeds} seeds, Bonferroni over {int(v['m'].iloc[0])} task×group tests{rough}):"]
    for kind, title in VERDICT_TITLES.items():
        sel = v[v["verdict"] == kind]
        parts = [f"{group}: {_verdict_items(sel[sel['group'] == group], kind)}" for group in groups
                 if (sel["group"] == group).any()]
        if parts:
            lines.append(f"  {title}: " + "; ".join(parts))
    return lines


def _verdict_items(rows, kind: str) -> str:
    if kind == UNCLEAR:
        return ", ".join(rows["task"])
    return ", ".join(f"{r.task} {r.benefit:+.3g}" + (f" [{r.ci_low:+.3g}, {r.ci_high:+.3g}]"
                                                     if np.isfinite(r.ci_low) else "")
                     for r in rows.itertuples())


def _estimate_lines(result: Analysis) -> list[str]:
    pooled = result.pooled[result.pooled["task"] == DMTL].iloc[0]
    best = result.best
    n = int(best["n_pairs"])
    return [f"All {len(result.configs)} shared configurations pooled: ΔMTL (%) "
            f"{fmt_ci(pooled['benefit'], pooled['ci_low'], pooled['ci_high'], int(pooled['n']))} "
            f"(95% bootstrap CI).",
            f"Best configuration (exploratory: chosen as the best of {result.n_eligible} on the same seeds; "
            f"its interval is optimistic; no verdict): {best['label']} — ΔMTL (%) "
            f"{fmt_ci(best['dmtl'], best['dmtl_lo'], best['dmtl_hi'], n)} over {n} seeds, diverged "
            f"{int(best['n_diverged'])}/{int(best['n_trials'])}. To judge it (and each task's best), rerun them "
            f"on fresh seeds: python -m orchestrator.sweep --confirm RUN_DIR --seeds ..."]


def _asha_lines(result: Analysis) -> list[str]:
    if "asha" not in result.data.schedulers:
        return []
    configs, last = result.configs, int(result.data.iterations[-1])
    early = int((configs["iteration"] < result.data.iterations[-1]).sum())
    return [f"ASHA: each configuration is compared at the last iteration all its seeds reached "
            f"({early} of {len(configs)} before iteration {last})."]


def _divergence_line(result: Analysis) -> str:
    div = result.divergence
    shared_div = int(div["n_diverged"].iloc[1:].sum())
    shared_n = int(div["n_trials"].iloc[1:].sum())
    excluded_total = int(result.excluded[["shared", INDEPENDENT]].to_numpy().sum()) if len(result.excluded) else 0
    return (f"Diverged: {shared_div}/{shared_n} shared vs {int(div['n_diverged'].iloc[0])}/"
            f"{int(div['n_trials'].iloc[0])} independent trials; {excluded_total} trial(s) excluded in all.")
