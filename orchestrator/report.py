"""Figures (matplotlib, Agg) and the report files of ``python -m orchestrator.analyze``.

``write_report`` writes into ``out``: report.html (self-contained: figures embedded as base64
PNG, inline CSS, no external links), report.md (the same tables; figures as the PNG files next
to it), benefit.csv (one row per task: the benefit pooled over all shared configurations with
the family-wise interval the headline's verdict uses, and the α/mode of the exploratory best
configuration), configs.csv (every shared configuration with its statistics) and the PNG figures.
"""
from __future__ import annotations

import base64
import html
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402

from orchestrator import stats  # noqa: E402
from orchestrator.schema import (FAILED_STATUSES, HARD, INDEPENDENT, MODES, SHARED_MODES, SOFT,  # noqa: E402
                                 better, direction, with_query)
from orchestrator.analyze import BEST_MIN_COVERAGE, NO_VERDICT_PBT, Analysis, fmt_ci, headline  # noqa: E402

MODE_COLORS = {INDEPENDENT: "#555555", SOFT: "#1f77b4", HARD: "#d62728", "all shared": "#9467bd"}


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    png: bytes | None = None
    note: str | None = None  # shown instead of the figure when there is nothing to draw


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()  # one layout pass; bbox_inches="tight" would draw the figure once more
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _grid(n: int, width: float = 3.6, height: float = 2.8) -> tuple[plt.Figure, np.ndarray]:
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------

def fig_benefit(result: Analysis) -> Figure:
    """Forest plot: per-task benefit of the best configuration and of all shared configurations pooled."""
    tasks = result.tasks
    best = result.configs[result.configs["config_id"] == result.best_config].iloc[0]
    pooled = result.pooled[result.pooled["task"].isin(tasks)]
    best_ci = [np.array([best[f"{p}_{t}"] for t in tasks], float) for p in ("benefit", "lo", "hi")]
    pooled_ci = [pooled[c].to_numpy(float) for c in ("benefit", "ci_low", "ci_high")]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(tasks) + 1.5))
    y = np.arange(len(tasks))
    for offset, (mean, lo, hi), label, color in (
            (-0.15, best_ci, "best configuration (exploratory, optimistic)", "#1f77b4"),
            (0.15, pooled_ci, "all shared configurations pooled", "#9467bd")):
        err = np.vstack([mean - lo, hi - mean])
        err = np.where(np.isfinite(err), err, 0.0)
        ax.errorbar(mean, y + offset, xerr=err, fmt="o", color=color, capsize=3, label=label)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, tasks)
    ax.invert_yaxis()
    ax.set_xlabel(f"benefit of sharing ({result.metric}; > 0 = sharing helped)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return Figure("benefit", "Benefit per task", "Mean paired benefit per task with 95% bootstrap CIs over seeds: "
                  "the best configuration (exploratory: selected as the best on the same seeds, so its interval "
                  "is optimistic) and all shared configurations pooled (no selection).",
                  _png(fig))


def fig_alpha(result: Analysis) -> Figure:
    """Benefit vs α (log axis) per task; α = 0 at the left edge, hard sharing at the right edge."""
    pairs = result.pairs
    trials = result.data.trials
    mode = trials["mode"].to_numpy()[pairs["shared"].to_numpy()]
    alpha = pd.to_numeric(trials["alpha"], errors="coerce").to_numpy()[pairs["shared"].to_numpy()]
    # position groups: soft at each α, hard as one group
    key = np.where(mode == HARD, -1.0, alpha)
    groups = np.unique(key[np.isfinite(key)])
    if len(groups) == 0:
        return Figure("alpha", "Benefit vs α", "", note="No shared trials with an α to plot.")
    code = np.searchsorted(groups, key)
    values = np.column_stack([result.benefit, result.dmtl])
    ok = np.isfinite(key)
    res = stats.clustered_bootstrap(values[ok], code[ok], pairs["base"].to_numpy()[ok], len(groups),
                                    resamples=result.resamples, seed=11)
    positive = groups[groups > 0]
    lo_pos = positive.min() if len(positive) else 1.0
    hi_pos = positive.max() if len(positive) else 1.0
    span = max(hi_pos / lo_pos, 10.0)
    x_zero, x_hard = lo_pos / span ** 0.35, hi_pos * span ** 0.35
    xpos = np.where(groups == -1.0, x_hard, np.where(groups == 0.0, x_zero, groups))
    panels = result.tasks + ["ΔMTL (%)"]
    fig, axes = _grid(len(panels))
    for k, (ax, name) in enumerate(zip(axes, panels)):
        mean, lo, hi = res["mean"][:, k], res["lo"][:, k], res["hi"][:, k]
        soft = groups >= 0
        order = np.argsort(xpos[soft])
        ax.plot(xpos[soft][order], mean[soft][order], "-", color=MODE_COLORS[SOFT], alpha=0.6)
        err = np.vstack([mean - lo, hi - mean])
        err = np.where(np.isfinite(err), err, 0.0)
        for sel, color in ((soft, MODE_COLORS[SOFT]), (~soft, MODE_COLORS[HARD])):
            if sel.any():
                ax.errorbar(xpos[sel], mean[sel], yerr=err[:, sel], fmt="o", color=color, capsize=3)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log")
        ticks = list(xpos)
        labels = [HARD if g == -1.0 else ("α=0" if g == 0.0 else f"{g:.3g}") for g in groups]
        ax.set_xticks(ticks, labels, fontsize=7, rotation=45)
        ax.minorticks_off()
        if (groups == 0.0).any():
            ax.axvline(math.sqrt(x_zero * lo_pos), color="grey", ls=":", lw=0.8)
        if (groups == -1.0).any():
            ax.axvline(math.sqrt(x_hard * hi_pos), color="grey", ls=":", lw=0.8)
        ax.set_title(name if k == len(panels) - 1 else f"task {name}", fontsize=9)
        ax.set_xlabel("α (soft sharing)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"benefit ({result.metric})")
    return Figure("alpha", "Benefit vs sharing strength α",
                  "Mean paired benefit (> 0 = sharing helped) per task and ΔMTL at each α of soft sharing "
                  "(log axis), pooled over λ and the other knobs, with 95% bootstrap CIs (resampling seeds). "
                  "α = 0 is drawn at the left edge and hard sharing at the right edge, separated by dotted lines.",
                  _png(fig))


def fig_lambda(result: Analysis) -> Figure:
    """Effect of the task weights λ: simplex for 2-3 tasks, per-task λ_i vs benefit otherwise."""
    configs = result.configs
    tasks = result.tasks
    lam = configs[[f"lambda_{t}" for t in tasks]].to_numpy(float)
    caption = ("Each point is one shared configuration (mean over seeds). Relative weight = λ_i / mean(λ), "
               "so 1 means equal weights.")
    if len(configs) < 2 or np.allclose(lam, lam[:1]) or not np.isfinite(lam).all():
        return Figure("lambda", "Effect of the task weights λ", caption,
                      note="λ was not varied in this sweep (all configurations have the same task weights).")
    share = lam / lam.mean(1, keepdims=True)
    modes = configs["mode"].to_numpy()
    n = len(tasks)
    extra = 1 if n in (2, 3) else 0
    fig, axes = _grid(n + extra)
    for k, task in enumerate(tasks):
        ax = axes[k]
        for m in pd.unique(modes):
            sel = modes == m
            ax.scatter(share[sel, k], configs[f"benefit_{task}"].to_numpy(float)[sel], s=14, alpha=0.7,
                       color=MODE_COLORS.get(m, "k"), label=m)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel(f"relative weight λ_{task}", fontsize=8)
        ax.set_title(f"task {task}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"benefit ({result.metric})")
    axes[0].legend(fontsize=7)
    dmtl = configs["dmtl"].to_numpy(float)
    if n == 2:
        ax = axes[n]
        w = lam[:, 0] / lam.sum(1)
        err = np.vstack([dmtl - configs["dmtl_lo"], configs["dmtl_hi"] - dmtl])
        ax.errorbar(w, dmtl, yerr=np.where(np.isfinite(err), err, 0.0), fmt="o", ms=4, capsize=2)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel(f"λ_{tasks[0]} / (λ_{tasks[0]} + λ_{tasks[1]})", fontsize=8)
        ax.set_title("ΔMTL (%) on the λ simplex", fontsize=9)
        ax.grid(alpha=0.3)
    elif n == 3:
        ax = axes[n]
        w = lam / lam.sum(1, keepdims=True)
        corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
        xy = w @ corners
        ax.plot(*np.vstack([corners, corners[:1]]).T, color="k", lw=0.8)
        for c, t, offset, align in zip(corners, tasks, ((-4, -10), (4, -10), (0, 5)), ("right", "left", "center")):
            ax.annotate(f"λ_{t}", c, textcoords="offset points", xytext=offset, ha=align, fontsize=8)
        limit = np.nanmax(np.abs(dmtl)) if np.isfinite(dmtl).any() else 1.0
        points = ax.scatter(xy[:, 0], xy[:, 1], c=dmtl, cmap="RdBu", vmin=-limit, vmax=limit, s=40,
                            edgecolors="k", linewidths=0.3)
        fig.colorbar(points, ax=ax, label="ΔMTL (%)")
        ax.set_aspect("equal")
        ax.set_xlim(-0.2, 1.2)
        ax.set_ylim(-0.15, 1.02)
        ax.axis("off")
        ax.set_title("ΔMTL (%) on the λ simplex", fontsize=9, pad=12)
    return Figure("lambda", "Effect of the task weights λ", caption, _png(fig))


def trial_scores(result: Analysis) -> np.ndarray:
    """(T, K) metric of each trial at its own last valid iteration (NaN if none)."""
    values = result.data.values
    last = result.last_iter
    out = np.full((len(last), values.shape[2]), np.nan)
    has = last >= 0
    out[has] = values[np.flatnonzero(has), last[has]]
    return out


def fig_modes(result: Analysis) -> Figure:
    """soft vs hard vs independent: the metric per task, one box + strip per mode."""
    scores = trial_scores(result)
    modes = result.data.trials["mode"].astype(str).to_numpy()
    usable = result.usable
    order = [m for m in MODES if (modes[usable] == m).any()]
    order += sorted(set(modes[usable]) - set(order))
    fig, axes = _grid(len(result.tasks), width=3.2)
    rng = np.random.default_rng(0)
    for k, (ax, task) in enumerate(zip(axes, result.tasks)):
        data = [scores[usable & (modes == m), k] for m in order]
        data = [d[np.isfinite(d)] for d in data]
        ax.boxplot(data, showfliers=False, widths=0.5)
        for i, d in enumerate(data):
            shown = d if len(d) <= 400 else rng.choice(d, 400, replace=False)
            ax.scatter(i + 1 + rng.uniform(-0.15, 0.15, len(shown)), shown, s=6, alpha=0.4,
                       color=MODE_COLORS.get(order[i], "k"))
        ax.set_xticks(np.arange(1, len(order) + 1), order, fontsize=8)
        ax.set_title(f"task {task}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"{result.metric} ({better(result.metric)} is better)")
    return Figure("modes", "Soft vs hard sharing vs independent",
                  f"{result.metric} of every usable trial at its own last iteration, per sharing mode "
                  "(box: quartiles; points: trials, at most 400 shown). Early-stopped trials enter at the "
                  "iteration they reached; the paired tables above compare at equal iterations.", _png(fig))


def budget_curves(result: Analysis, points: int = 40) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per arm: (k, quantiles (len(k), 3)) of the best mean-over-tasks metric among k random trials."""
    scores = stats.nanmean_rows(trial_scores(result))
    trials = result.data.trials
    status = trials["status"].astype(str).to_numpy()
    modes = trials["mode"].astype(str).to_numpy()
    counted = result.usable | np.isin(status, FAILED_STATUSES)  # failures are draws with no model
    scores = np.where(result.usable, scores, np.nan)
    lower = direction(result.metric) < 0
    arms = {INDEPENDENT: counted & (modes == INDEPENDENT), "all shared": counted & (modes != INDEPENDENT)}
    for m in SHARED_MODES:
        if (counted & (modes == m)).any() and len(set(modes[counted]) - {INDEPENDENT}) > 1:
            arms[m] = counted & (modes == m)
    out = {}
    for arm, sel in arms.items():
        n = int(sel.sum())
        if n == 0:
            continue
        ks = np.unique(np.geomspace(1, n, min(points, n)).round().astype(int))
        out[arm] = (ks, stats.best_of_k(scores[sel], lower, ks))
    return out


def fig_budget(result: Analysis) -> Figure:
    curves = budget_curves(result)
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, (ks, q) in curves.items():
        color = MODE_COLORS.get(arm, "k")
        finite = np.isfinite(q)
        ax.plot(ks[finite[:, 1]], q[finite[:, 1], 1], "-", color=color, label=f"{arm} ({ks[-1]} trials)")
        band = finite[:, 0] & finite[:, 2]
        ax.fill_between(ks[band], q[band, 0], q[band, 2], color=color, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("number of trials k (budget)")
    ax.set_ylabel(f"best mean {result.metric} over tasks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Figure("budget", "Budget curve (Lucic et al. 2018)",
                  f"Median (line) and 10–90% range (band) of the best {result.metric} (mean over tasks, at each "
                  "trial's last iteration) among k trials drawn at random without replacement from each arm, "
                  "computed exactly from the order statistics. Diverged and errored trials count as draws that "
                  "produce no model, so divergence costs budget; a median is used because such draws have no value.",
                  _png(fig))


def best_trials(result: Analysis) -> tuple[np.ndarray, np.ndarray]:
    """Shared trials of the best configuration and their paired baseline trials."""
    pairs = result.pairs[result.pairs["config_id"] == result.best_config]
    return pairs["shared"].to_numpy(), pairs["base"].to_numpy()


def fig_curves(result: Analysis) -> Figure:
    shared, base = best_trials(result)
    values = result.data.values
    its = result.data.iterations
    fig, axes = _grid(len(result.tasks))
    for k, (ax, task) in enumerate(zip(axes, result.tasks)):
        for trials, color, label, style in ((shared, MODE_COLORS[SOFT], "best shared", "-"),
                                            (base, MODE_COLORS[INDEPENDENT], INDEPENDENT, "--")):
            curves = values[trials, :, k]
            ax.add_collection(LineCollection([np.column_stack([its, c]) for c in curves], colors=color, alpha=0.15,
                                             linewidths=0.8, linestyles=style))
            mean = stats.nanmean_rows(curves.T)
            ax.plot(its, mean, style, color=color, lw=2, label=f"{label} (mean of {len(trials)})")
        ax.set_title(f"task {task}", fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{result.metric} ({better(result.metric)} is better)")
    axes[0].legend(fontsize=7)
    return Figure("curves", "Learning curves",
                  f"{result.metric} over iterations for the best shared configuration and its paired independent "
                  "trials: thin lines are seeds, thick lines the mean over the seeds that reached that iteration.",
                  _png(fig))


def _load_samples(path: object, run_dir: str) -> tuple[np.ndarray, list[str]] | None:
    if path is None or (isinstance(path, float) and math.isnan(path)) or str(path) == "":
        return None
    if "://" in str(path):  # a checkpoint in the sweep's object storage (s3://...)
        uri = with_query(str(path), run_dir.partition("?")[2])  # the run's endpoint options hold for its checkpoints
        try:
            fs, location = pafs.FileSystem.from_uri(uri)
            with fs.open_input_file(location) as f:
                return _read_samples(io.BytesIO(f.read()))
        except (OSError, ValueError):
            return None
    candidates = [Path(str(path)), Path(run_dir) / str(path)]
    for candidate in candidates:
        if candidate.is_file():
            return _read_samples(candidate)
    return None


def _read_samples(source: Path | io.BytesIO) -> tuple[np.ndarray, list[str]] | None:
    try:
        with np.load(source, allow_pickle=False) as npz:
            return np.asarray(npz["images"], np.float32), [str(t) for t in npz["tasks"]]
    except (OSError, ValueError, KeyError):
        return None


def _tile(images: np.ndarray, max_side: int = 4) -> np.ndarray:
    """(k, C, H, W) in [-1, 1] -> one square grid image in [0, 1] of up to max_side² samples."""
    side = max(1, min(max_side, math.ceil(math.sqrt(len(images)))))
    images = images[: side * side]
    k, c, h, w = images.shape
    pad = 1  # a light gutter between samples
    canvas = np.ones((side * (h + pad) - pad, side * (w + pad) - pad, c), np.float32)
    for i in range(k):
        r, q = divmod(i, side)
        canvas[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = np.moveaxis(images[i], 0, -1)
    canvas = np.clip((canvas + 1) / 2, 0, 1)
    return canvas[..., 0] if c == 1 else canvas[..., :3]


def fig_samples(result: Analysis) -> Figure:
    """Sample grids per task for a representative seed of the best configuration and its baseline."""
    pairs = result.pairs[result.pairs["config_id"] == result.best_config]
    trials = result.data.trials
    # the pair with the median ΔMTL among those with saved samples: representative, not cherry-picked
    pairs = pairs.iloc[np.argsort(pairs["dmtl"].to_numpy())]
    loaded = [(_load_samples(trials["samples_path"].iloc[s] if "samples_path" in trials else None,
                             trials["run_dir"].iloc[s]), s) for s in pairs["shared"]]
    with_samples = [i for i, (l, _) in enumerate(loaded) if l is not None]
    pick = with_samples[len(with_samples) // 2] if with_samples else len(pairs) // 2
    shared_trial = int(pairs["shared"].iloc[pick])
    base_trial = int(pairs["base"].iloc[pick])
    columns = []
    for trial, label in ((shared_trial, "best shared"), (base_trial, INDEPENDENT)):
        samples = _load_samples(trials["samples_path"].iloc[trial] if "samples_path" in trials else None,
                                trials["run_dir"].iloc[trial])
        columns.append((label, trials["trial_id"].iloc[trial], samples))
    if all(c[2] is None for c in columns):
        return Figure("samples", "Samples", "", note="No samples: the trials of the best configuration and "
                      "their baselines have no readable samples_path (.npz) file.")
    tasks = result.tasks
    fig, axes = plt.subplots(2, len(tasks), figsize=(2.6 * len(tasks) + 0.6, 5.6), squeeze=False)
    for row, (label, trial_id, samples) in enumerate(columns):
        for col, task in enumerate(tasks):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"task {task}", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{label}\n{trial_id}", fontsize=8)
            if samples is None or task not in samples[1]:
                ax.text(0.5, 0.5, "no samples", ha="center", va="center", fontsize=9, color="grey")
                continue
            tile = _tile(samples[0][samples[1].index(task)])
            ax.imshow(tile, cmap="gray" if tile.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    return Figure("samples", "Samples",
                  "Generated samples per task (columns) of the seed with the median ΔMTL among the best configuration's "
                  "trials that saved samples (top row), and of its paired independent trial (bottom row).", _png(fig))


# ----------------------------------------------------------------------------------------------
# Tables (rendered to both HTML and Markdown)
# ----------------------------------------------------------------------------------------------

@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    flags: list[str] | None = None  # per row: "", "gain" or "loss" (colours the HTML row)


def _g(v: object, digits: int = 4) -> str:
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
    return {"loss": "NEGATIVE TRANSFER", "gain": "gain", "unclear": "unclear", "point estimate": "point estimate",
            NO_VERDICT_PBT: NO_VERDICT_PBT}[v] + (" (few seeds)" if 2 <= n < 5 and v in ("gain", "loss") else "")


def _alpha_text(mode: str, alpha: float) -> str:
    return "∞ (hard sharing: the α → ∞ limit)" if mode == HARD else _g(alpha)


def tables(result: Analysis, top: int) -> dict[str, Table]:
    tasks = result.tasks
    best = result.configs[result.configs["config_id"] == result.best_config].iloc[0]
    n = int(best["n_pairs"])
    out: dict[str, Table] = {}
    out["best"] = Table(
        f"Best shared configuration (exploratory): {best['label']}",
        ["task", "benefit [95% CI, optimistic]", "pairs"],
        [[t, fmt_ci(best[f"benefit_{t}"], best[f"lo_{t}"], best[f"hi_{t}"], n), str(n)] for t in tasks]
        + [["ΔMTL (%)", fmt_ci(best["dmtl"], best["dmtl_lo"], best["dmtl_hi"], n), str(n)]],
        f"config_id {best['config_id']}, mode {best['mode']}, α {_alpha_text(best['mode'], best['alpha'])}, "
        f"compared at iteration {_g(best['iteration'])}, diverged {int(best['n_diverged'])}/{int(best['n_trials'])} "
        f"({best['diverged_rate']:.0%}). Exploratory: chosen as the highest mean ΔMTL among "
        f"{result.n_eligible} configurations on the same seeds, so its interval is optimistic and it gets no "
        f"gain/negative-transfer verdict; the verdicts come from the pooled estimates below.")
    simultaneous = result.verdicts.set_index(["group", "task"])
    m = int(result.verdicts["m"].iloc[0])
    for name, frame, title, caption in (
            ("pooled", result.pooled, "All shared configurations pooled",
             "Mean over all shared configurations of the paired benefit, resampling seeds (baseline trials) with "
             "all their pairs: does sharing help on average over the searched space, without selection."),
            ("modes", result.by_mode, "By sharing mode",
             "Soft vs hard sharing, each pooled over its configurations, resampling seeds.")):
        rows, flags = [], []
        for r in frame.itertuples():
            group = r.group if (r.group, r.task) in simultaneous.index else "all shared"  # one mode: the same
            s = simultaneous.loc[(group, r.task)] if (group, r.task) in simultaneous.index else None
            rows.append([r.group, r.task, fmt_ci(r.benefit, r.ci_low, r.ci_high, r.n),
                         "—" if s is None else fmt_ci(s["benefit"], s["ci_low"], s["ci_high"], int(s["n"])),
                         "—" if s is None else _verdict_text(s["verdict"], int(s["n"])), str(r.n)])
            flags.append("" if s is None else s["verdict"])
        out[name] = Table(title, ["group", "task", "benefit [95% CI]", f"simultaneous 95% CI (m={m})", "verdict",
                                  "seeds"], rows,
                          caption + f" The verdict uses the simultaneous interval: Student t over seeds at level "
                          f"1 − 0.05/{m} (Bonferroni over the {m} task × group verdicts of the headline), so the "
                          f"chance of any false verdict is ≤ 5%; ΔMTL gets no verdict.", flags)
    cfg = result.configs.head(top)
    out["configs"] = Table(
        f"Top {len(cfg)} of {len(result.configs)} shared configurations (by mean ΔMTL over seeds)",
        ["#", "configuration", "config_id", "pairs", "iteration", "diverged", "ΔMTL % [95% CI]"]
        + [f"benefit {t}" for t in tasks],
        [[str(i + 1), r["label"], r["config_id"], str(int(r["n_pairs"])), _g(r["iteration"]),
          f"{int(r['n_diverged'])}/{int(r['n_trials'])} ({r['diverged_rate']:.0%})",
          fmt_ci(r["dmtl"], r["dmtl_lo"], r["dmtl_hi"], int(r["n_pairs"]))]
         + [fmt_ci(r[f"benefit_{t}"], r[f"lo_{t}"], r[f"hi_{t}"], int(r["n_pairs"])) for t in tasks]
         for i, (_, r) in enumerate(cfg.iterrows())],
        f"All configurations with their statistics are in configs.csv (alpha = inf for hard sharing). Intervals "
        f"are per configuration, before selection. A configuration needs at least "
        f"{BEST_MIN_COVERAGE:.0%} of the pairs of the best-covered one to be chosen as best. 'iteration': all "
        f"pairs of a configuration are compared at the last iteration all of them reached.")
    trials = result.data.trials
    order = np.argsort(-result.dmtl)
    top_pairs = result.pairs.iloc[order[:top]]
    labels = dict(zip(result.configs["config_id"], result.configs["label"]))
    out["trials"] = Table(
        f"Top {len(top_pairs)} shared trials (by ΔMTL against their own baseline)",
        ["trial_id", "configuration", "seed", "iteration", "ΔMTL %"] + [f"{result.metric} {t}" for t in tasks],
        [[str(trials["trial_id"].iloc[p.shared]), labels.get(p.config_id, p.config_id), _g(p.seed),
          str(int(p.iteration)), f"{p.dmtl:+.3g}"]
         + [_g(result.data.values[p.shared, np.searchsorted(result.data.iterations, p.iteration), k])
            for k in range(len(tasks))]
         for p in top_pairs.itertuples()],
        "Single trials: the best of many draws, for inspection, not as evidence.")
    out["excluded"] = Table(
        "Excluded trials", ["reason", "shared", "independent"],
        [[r.reason, str(r.shared), str(r.independent)] for r in result.excluded.itertuples()] or [["none", "0", "0"]],
        "Excluded trials are left out of the paired statistics. Diverged trials still count in the budget curve, "
        "as draws that produced no model.")
    out["status"] = Table("Trials by status", list(result.status_counts.columns),
                          [[str(v) for v in row] for row in result.status_counts.itertuples(index=False)])
    div = result.divergence
    shown = pd.concat([div.iloc[:1], div.iloc[1:][div["n_diverged"].iloc[1:] > 0]
                       .sort_values("diverged_rate", ascending=False).head(top)])
    out["divergence"] = Table(
        "Divergence per configuration", ["configuration", "config_id", "diverged", "errored", "trials", "rate"],
        [[r.label, r.config_id, str(r.n_diverged), str(r.n_error), str(r.n_trials), f"{r.diverged_rate:.0%}"]
         for r in shown.itertuples()],
        "Divergence is a cost of sharing: the first row is the independent baseline's own rate; the other rows "
        "are the shared configurations with most divergence (all in configs.csv).")
    return out


def _table_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = []
    for i, row in enumerate(t.rows):
        cls = f' class="{t.flags[i]}"' if t.flags and t.flags[i] in ("gain", "loss") else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    caption = f'<p class="caption">{html.escape(t.caption)}</p>' if t.caption else ""
    return (f"<h3>{html.escape(t.title)}</h3><div class=\"scroll\"><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>{caption}")


def _table_md(t: Table) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")
    lines = [f"### {t.title}", "", "| " + " | ".join(map(esc, t.header)) + " |",
             "|" + "---|" * len(t.header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in t.rows]
    if t.caption:
        lines += ["", t.caption]
    return "\n".join(lines) + "\n"


def _figure_html(f: Figure) -> str:
    if f.png is None:
        return f"<h3>{html.escape(f.title)}</h3><p class=\"note\">{html.escape(f.note or '')}</p>"
    data = base64.b64encode(f.png).decode("ascii")
    return (f"<h3>{html.escape(f.title)}</h3><img alt=\"{html.escape(f.title)}\" src=\"data:image/png;base64,{data}\">"
            f"<p class=\"caption\">{html.escape(f.caption)}</p>")


def _figure_md(f: Figure) -> str:
    if f.png is None:
        return f"### {f.title}\n\n_{f.note}_\n"
    return f"### {f.title}\n\n![{f.title}]({f.name}.png)\n\n{f.caption}\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
h3{font-size:1.05em;margin-bottom:.4em}
table{border-collapse:collapse;font-size:.85em;margin:.3em 0} th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;
white-space:nowrap} .scroll{overflow-x:auto;max-width:100%}
th{background:#f3f3f3} tr.gain td{background:#e8f5e9} tr.loss td{background:#fdecea}
.headline{background:#f7f9fc;border-left:4px solid #1f77b4;padding:.6em 1em;font-family:ui-monospace,monospace;
font-size:.85em;white-space:pre-wrap}
.caption,.note{color:#555;font-size:.85em;max-width:60em} img{max-width:100%;border:1px solid #eee}
.meta{color:#666;font-size:.85em} .toc{font-size:.9em} .toc a{color:#1f77b4}
"""


def method_notes(result: Analysis) -> list[str]:
    word = better(result.metric)
    sign = "baseline − shared" if word == "lower" else "shared − baseline"
    notes = [
        f"Metric: {result.metric} ({word} is better). Benefit = {sign}, so a positive benefit always means "
        f"sharing helped; ΔMTL (Maninis et al. 2019) = mean over tasks of (−1)^l·(M_shared − M_base)/M_base × 100 "
        f"with l = 1 for lower-is-better metrics: positive = better on average.",
        "Pairing: each shared trial is compared with the independent trial of the same baseline_key (same seed, "
        "data and ordinary knobs). All pairs of one configuration are compared at one iteration, the last that all "
        "of them reached (under ASHA seeds stop at different rungs: this neither mixes iterations nor keeps only "
        "ASHA's survivors). Diverged/errored trials, trials without metrics and unpaired trials are excluded and "
        "counted; divergence is shown per configuration.",
        f"Confidence intervals: 95% percentile bootstrap over seeds ({result.resamples} resamples, fixed RNG seed), "
        "with Hesterberg's small-sample expansion of the percentile levels. A bootstrap interval never leaves the "
        "range of the observed seeds, so with fewer than 5 seeds it covers less than 95% (3 seeds: ~75%) — "
        "flags from few seeds are marked. One seed gives a point estimate without an interval.",
        "Verdicts (gain / NEGATIVE TRANSFER) are made only without selection: on all shared configurations pooled "
        "and on each mode pooled, with simultaneous intervals (Student t over seeds, Bonferroni over the tasks × "
        "groups tested), so the chance of any false verdict in the headline is at most 5%. benefit.csv holds the "
        "pooled benefit with that interval (n_pairs = pairs pooled), and the mode and α of the best "
        "configuration (α = inf for hard sharing, the α → ∞ limit).",
        "The best configuration is exploratory: it is chosen as the highest mean ΔMTL on the same seeds it is "
        f"evaluated on, so its interval is optimistic, and it gets no verdict. Only configurations with at least "
        f"{BEST_MIN_COVERAGE:.0%} of the pairs of the best-covered one can be chosen, so one that lost seeds to "
        "divergence is not judged on its survivors.",
    ]
    return notes + result.notes


def build_figures(result: Analysis) -> list[Figure]:
    return [fig_benefit(result), fig_alpha(result), fig_lambda(result), fig_modes(result), fig_budget(result),
            fig_curves(result), fig_samples(result)]


def write_report(result: Analysis, out: Path, top: int = 10) -> dict[str, Path]:
    """Write all report files into ``out`` and return their paths."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    figures = build_figures(result)
    tbl = tables(result, top)
    for f in figures:
        if f.png is not None:
            (out / f"{f.name}.png").write_bytes(f.png)
    result.best_table.to_csv(out / "benefit.csv", index=False)
    result.configs.to_csv(out / "configs.csv", index=False)

    trials = result.data.trials
    meta = (f"Runs: {', '.join(str(p) for p in result.data.run_dirs)} · {len(trials)} trials · "
            f"{len(result.pairs)} pairs · tasks {', '.join(result.tasks)} · metric {result.metric} · "
            f"generated {time.strftime('%Y-%m-%d %H:%M')}")
    lines = headline(result)
    sections: list[tuple[str, list[object]]] = [
        ("Sharing benefit per task", [tbl["best"], figures[0], tbl["pooled"], tbl["modes"]]),
        ("Sensitivity", [figures[1], figures[2], figures[3]]),
        ("Budget and learning curves", [figures[4], figures[5]]),
        ("Samples", [figures[6]]),
        ("Configurations", [tbl["configs"], tbl["trials"]]),
        ("What was excluded", [tbl["status"], tbl["excluded"], tbl["divergence"]]),
    ]
    notes = method_notes(result)
    html_parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Does sharing help? — "
                  f"{html.escape(result.metric)}</title><style>{CSS}</style></head><body>",
                  "<h1>Does sharing help?</h1>", f"<p class=\"meta\">{html.escape(meta)}</p>",
                  f"<div class=\"headline\">{html.escape(chr(10).join(lines))}</div>",
                  "<h2>How to read this</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"]
    md_parts = ["# Does sharing help?", "", meta, "", "```", *lines, "```", "", "## How to read this", "",
                *[f"- {n}" for n in notes], ""]
    html_parts.append("<p class=\"toc\">" + " · ".join(f"<a href=\"#s{i}\">{html.escape(title)}</a>"
                                                      for i, (title, _) in enumerate(sections)) + "</p>")
    for i, (title, items) in enumerate(sections):
        html_parts.append(f"<h2 id=\"s{i}\">{html.escape(title)}</h2>")
        md_parts += [f"## {title}", ""]
        for item in items:
            if isinstance(item, Table):
                html_parts.append(_table_html(item))
                md_parts.append(_table_md(item))
            else:
                html_parts.append(_figure_html(item))
                md_parts.append(_figure_md(item))
    html_parts.append("</body></html>")
    (out / "report.html").write_text("\n".join(html_parts), encoding="utf-8")
    (out / "report.md").write_text("\n".join(md_parts), encoding="utf-8")
    result.notes.append(f"report written in {time.perf_counter() - started:.1f} s")
    return {"html": out / "report.html", "md": out / "report.md", "csv": out / "benefit.csv", "dir": out}
