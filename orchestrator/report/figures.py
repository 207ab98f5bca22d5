"""The report's figures (matplotlib, Agg), drawn from a finished Analysis: nothing is computed
here that the analysis did not compute."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from orchestrator.analysis import Analysis  # noqa: E402
from orchestrator.analysis.answer import change_of  # noqa: E402
from orchestrator.analysis.estimates import ALL_SHARED, trial_scores  # noqa: E402
from orchestrator.analysis.stats import nanmean_rows  # noqa: E402
from orchestrator.report.tables import format_value  # noqa: E402
from orchestrator.schema import (FEATURE, FEATURE_PRIVATE, HARD, INDEPENDENT, MODES, SOFT, better,  # noqa: E402
                                 with_query)

MODE_COLORS = {INDEPENDENT: "#555555", SOFT: "#1f77b4", HARD: "#d62728", ALL_SHARED: "#9467bd",
               FEATURE: "#2ca02c", FEATURE_PRIVATE: "#8c564b"}


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

VERDICT_COLORS = {"gain": "#2ca02c", "negative_transfer": "#d62728", "unclear": "#555555"}


def fig_answer(result: Analysis) -> Figure:
    """Forest plot of the answer: each task's pooled change of the metric with the very interval
    its verdict uses (Holm's level at its step), one row per (data regime, task)."""
    if result.answer is None:
        return Figure("answer", "The answer per task", "", note="No verdicts under PBT (pairs are not independent).")
    rows = [(r.regime, t) for r in result.answer.regimes for t in r.tests]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.6))
    y = np.arange(len(rows))
    for i, (regime, t) in enumerate(rows):
        change, low, high = change_of(t, result.metric)
        color = VERDICT_COLORS[t.verdict]
        if np.isfinite(low) and np.isfinite(high):  # a sign-flip interval is unbounded with too few seeds
            ax.plot([low, high], [i, i], color=color, lw=2)
        ax.plot([change], [i], "o", color=color)
    ax.axvline(0, color="k", lw=0.8)
    several = len(result.answer.regimes) > 1
    ax.set_yticks(y, [f"task {t.name}" + (f" ({regime} img)" if several else "") for regime, t in rows])
    ax.set_ylabel("task")
    ax.invert_yaxis()
    helped = "< 0" if better(result.metric) == "lower" else "> 0"
    ax.set_xlabel(f"{result.metric} of the shared arms vs the baseline, % ({helped} = sharing helped)")
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Line2D([], [], color=c, marker="o", lw=2, label=v.replace("_", " "))
               for v, c in VERDICT_COLORS.items()]
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    return Figure("answer", "The answer per task",
                  "Each task's benefit pooled over all shared configurations, as the change of the metric relative "
                  "to the baseline at the same seed (geometric), with the interval the verdict uses: "
                  f"{result.answer.test_words} at the level Holm's procedure used for that task (family-wise 5% "
                  "over the tasks), so a task is green (gain) or red (negative transfer) exactly when its "
                  "interval excludes 0.",
                  _png(fig))


def fig_alpha_answer(result: Analysis) -> Figure:
    """Per task, the benefit of soft sharing as a curve over log α with its band, one line per data
    regime (inference.alpha_curve: a polynomial in log10 α fitted to every (configuration, seed)
    log ratio, seed-clustered sandwich band)."""
    curves = result.answer.curve_table() if result.answer is not None else pd.DataFrame()
    if curves.empty:
        return Figure("alpha_answer", "Benefit as a curve over log α", "",
                      note="No curve: it needs soft sharing at 2 or more α values and 3 or more seeds.")
    fig, axes = _grid(len(result.tasks))
    regimes = list(dict.fromkeys(curves["samples_per_task"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, task in zip(axes, result.tasks):
        for j, regime in enumerate(regimes):
            c = curves[(curves["task"] == task) & (curves["samples_per_task"] == regime)]
            if c.empty:
                continue
            color = colors[j % len(colors)]
            label = f"{regime} images" if regime != "all" else "all images"
            ax.plot(c["alpha"], c["change_pct"], color=color, label=label)
            ax.fill_between(c["alpha"], c["change_lo_pct"], c["change_hi_pct"], color=color, alpha=0.2, lw=0)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(f"task {task}", fontsize=10)
        ax.set_xlabel("α (soft sharing, log axis)", fontsize=9)
        ax.set_ylabel(f"{result.metric} vs baseline, %", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    helped = "below 0" if better(result.metric) == "lower" else "above 0"
    return Figure("alpha_answer", "Benefit as a curve over log α",
                  f"Per task and data regime, the change of {result.metric} under soft sharing relative to the "
                  f"baseline at the same seed ({helped} = sharing helped), modelled as a polynomial in log10 α "
                  "(degree up to 2) fitted to every (configuration, seed) log ratio, with a pointwise 95% band "
                  "clustered by seed. The band is pointwise, not simultaneous over α: read the verdicts above.",
                  _png(fig))


def fig_benefit(result: Analysis) -> Figure:
    """Forest plot: per-task benefit of the best configuration and of all shared configurations pooled."""
    tasks = result.tasks
    best = result.best
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
    ax.set_yticks(y, [f"task {t}" for t in tasks])
    ax.set_ylabel("task")
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
    curve = result.alpha_curve
    if curve is None:
        return Figure("alpha", "Benefit vs α", "", note="No shared trials with an α to plot.")
    groups = curve.alphas  # soft at each α, hard as -1
    positive = groups[groups > 0]
    lo_pos = positive.min() if len(positive) else 1.0
    hi_pos = positive.max() if len(positive) else 1.0
    span = max(hi_pos / lo_pos, 10.0)
    x_zero, x_hard = lo_pos / span ** 0.35, hi_pos * span ** 0.35
    xpos = np.where(groups == -1.0, x_hard, np.where(groups == 0.0, x_zero, groups))
    panels = result.tasks + ["ΔMTL (%)"]
    fig, axes = _grid(len(panels))
    for k, (ax, name) in enumerate(zip(axes, panels)):
        mean, lo, hi = curve.mean[:, k], curve.lo[:, k], curve.hi[:, k]
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
        ax.set_xticks(ticks, labels, fontsize=9)
        ax.minorticks_off()
        if (groups == 0.0).any():
            ax.axvline(math.sqrt(x_zero * lo_pos), color="grey", ls=":", lw=0.8)
        if (groups == -1.0).any():
            ax.axvline(math.sqrt(x_hard * hi_pos), color="grey", ls=":", lw=0.8)
        ax.set_title(name if k == len(panels) - 1 else f"task {name}", fontsize=9)
        ax.set_xlabel("α (soft sharing)", fontsize=9)
        ax.set_ylabel("ΔMTL (%)" if k == len(panels) - 1 else f"benefit ({result.metric})", fontsize=9)
        ax.grid(alpha=0.3)
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


def fig_modes(result: Analysis) -> Figure:
    """soft vs hard vs independent: the metric per task, one box + strip per mode."""
    scores = trial_scores(result.data.values, result.last_iter)
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


def fig_budget(result: Analysis) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, (ks, q) in result.budget.items():
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


def _best_trials(result: Analysis) -> tuple[np.ndarray, np.ndarray]:
    """Shared trials of the best configuration and their paired baseline trials."""
    pairs = result.pairs[result.pairs["config_id"] == result.best_config]
    return pairs["shared"].to_numpy(), pairs["base"].to_numpy()


def fig_curves(result: Analysis) -> Figure:
    shared, base = _best_trials(result)
    values = result.data.values
    its = result.data.iterations
    fig, axes = _grid(len(result.tasks))
    for k, (ax, task) in enumerate(zip(axes, result.tasks)):
        for trials, color, label, style in ((shared, MODE_COLORS[SOFT], "best shared", "-"),
                                            (base, MODE_COLORS[INDEPENDENT], INDEPENDENT, "--")):
            curves = values[trials, :, k]
            ax.add_collection(LineCollection([np.column_stack([its, c]) for c in curves], colors=color, alpha=0.15,
                                             linewidths=0.8, linestyles=style))
            mean = nanmean_rows(curves.T)
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
    with_samples = [i for i, (samples, _) in enumerate(loaded) if samples is not None]
    pick = with_samples[len(with_samples) // 2] if with_samples else len(pairs) // 2
    shared_trial = int(pairs["shared"].iloc[pick])
    base_trial = int(pairs["base"].iloc[pick])
    best_label = result.best["label"]
    seed = pairs["seed"].iloc[pick]
    columns = []
    for trial, label in ((shared_trial, f"best: {best_label}"), (base_trial, INDEPENDENT)):
        samples = _load_samples(trials["samples_path"].iloc[trial] if "samples_path" in trials else None,
                                trials["run_dir"].iloc[trial])
        columns.append((label, f"seed {format_value(seed)}", samples))
    if all(c[2] is None for c in columns):
        return Figure("samples", "Samples", "", note="No samples: the trials of the best configuration and "
                      "their baselines have no readable samples_path (.npz) file.")
    tasks = result.tasks
    fig, axes = plt.subplots(2, len(tasks), figsize=(2.6 * len(tasks) + 0.6, 5.6), squeeze=False)
    for row, (label, seed_label, samples) in enumerate(columns):
        for col, task in enumerate(tasks):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"task {task}", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{label}\n{seed_label}", fontsize=8)
            if samples is None or task not in samples[1]:
                ax.text(0.5, 0.5, "no samples", ha="center", va="center", fontsize=9, color="grey")
                continue
            tile = _tile(samples[0][samples[1].index(task)])
            ax.imshow(tile, cmap="gray" if tile.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    return Figure("samples", "Samples",
                  "Generated samples per task (columns) of the seed with the median ΔMTL among the best "
                  "configuration's "
                  "trials that saved samples (top row), and of its paired independent trial (bottom row).", _png(fig))


def build_figures(result: Analysis) -> dict[str, Figure]:
    figures = [fig_answer(result), fig_alpha_answer(result), fig_benefit(result), fig_alpha(result),
               fig_lambda(result), fig_modes(result), fig_budget(result), fig_curves(result), fig_samples(result)]
    return {f.name: f for f in figures}
