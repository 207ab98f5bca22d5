"""``--until-decisive``: add seeds in blocks until every task's verdict is decided or a cap is reached.

Block k is an ordinary sweep run ``<name>-b<k>`` (the same sweep file, so the same configurations,
on the next block of seeds; each resumable on its own). After each block the blocks so far are
analysed together and each task's per-seed log ratios are compared with the Lan–DeMets
O'Brien–Fleming boundary at information fraction (seeds so far / cap), each task at 5% / tasks
(orchestrator.analysis.inference.sequential_verdicts); each data regime is decided on its
own. A task is decided at the first look its
boundary is crossed; the sweep stops when all are, or at the cap. The decisions are written to
``<storage>/<name>.sequential.json``: those are the verdicts to quote (the report of the pooled
blocks gives fixed-sample intervals, which ignore that the looks could stop early).
"""
from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from orchestrator.analysis import inference
from orchestrator.schema import RunLocation
from trainables.cli import UsageError


def without_flags(argv: list[str], flags: dict[str, bool]) -> list[str]:
    """argv less the given options (flag -> takes a value), in both --flag VALUE and --flag=VALUE forms."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        name = item.split("=", 1)[0]
        if name in flags:
            skip = flags[name] and "=" not in item
            continue
        out.append(item)
    return out


def seed_blocks(first: list[int], max_seeds: int) -> list[list[int]]:
    """The first block as given, then blocks of the same size on the next unused seeds, up to the cap."""
    if max_seeds < len(first):
        raise UsageError(f"--max-seeds {max_seeds} is below the first block's {len(first)} seeds")
    blocks, next_seed = [list(first)], max(first) + 1
    while sum(len(b) for b in blocks) < max_seeds:
        size = min(len(first), max_seeds - sum(len(b) for b in blocks))
        blocks.append(list(range(next_seed, next_seed + size)))
        next_seed += size
    return blocks


def decide(run_dirs: list[str], look: int, fractions: list[float]) -> dict[str, Any]:
    """Per task the verdict at this look (gain / negative_transfer / unclear) from the blocks so far.
    Each data regime is a family of its own (its tasks at 5% / tasks); with several regimes a
    verdict's key is ``<regime>:<task>`` (``10:2``: task 2 at 10 images per task)."""
    from orchestrator.analysis import analyze, load_runs

    regimes = analyze(load_runs(list(run_dirs), "fid")).answer.regimes
    verdicts: dict[str, str] = {}
    for regime in regimes:
        for task, verdict in inference.sequential_verdicts(regime.per_seed, look, fractions).items():
            verdicts[task if len(regimes) == 1 else f"{regime.regime}:{task}"] = verdict
    n_tasks = max(len(r.per_seed) for r in regimes)
    return {"look": look, "seeds": int(max(len(v) for r in regimes for v in r.per_seed.values())),
            "fraction": fractions[look], "verdicts": verdicts,
            "bound_z": float(inference.obrien_fleming_bounds(fractions, inference.FAMILY_ALPHA / n_tasks)[look])}


def _task_words(key: str) -> str:
    regime, _, task = key.rpartition(":")
    return f"task {task}" + (f" ({regime} images)" if regime and regime != "all" else " (all images)" if regime
                             else "")


def run_until_decisive(run_block: Callable[[list[int], str], int], storage: RunLocation, name: str,
                       first: list[int], max_seeds: int) -> int:
    """Run blocks (``run_block(seeds, block_name) -> exit code``) until decided or capped."""
    blocks = seed_blocks(first, max_seeds)
    fractions = list(np.cumsum([len(b) for b in blocks]) / max_seeds)
    decided: dict[str, dict[str, Any]] = {}
    record: dict[str, Any] = {"name": name, "max_seeds": max_seeds, "blocks": [], "decided": decided}
    run_dirs: list[str] = []
    for look, seeds in enumerate(blocks):
        block_name = f"{name}-b{look + 1}"
        code = run_block(seeds, block_name)
        if code != 0:
            return code
        run_dirs.append(storage.uri(block_name))
        status = decide(run_dirs, look, fractions)
        for task, verdict in status["verdicts"].items():
            if task not in decided and verdict != "unclear":
                decided[task] = {"verdict": verdict, "look": look + 1, "seeds": status["seeds"]}
        record["blocks"].append({"run": block_name, "seeds": seeds, **status})
        storage.write_text(json.dumps(record, indent=1), f"{name}.sequential.json")
        words = ", ".join(f"{_task_words(t)}: {v}" for t, v in status["verdicts"].items())
        print(f"look {look + 1}/{len(blocks)} ({status['seeds']} seeds, O'Brien-Fleming |z| >= "
              f"{status['bound_z']:.2f}): {words}", flush=True)
        if len(decided) == len(status["verdicts"]):
            print(f"every task decided after {status['seeds']} seeds", flush=True)
            return 0
    undecided = [t for t in record["blocks"][-1]["verdicts"] if t not in decided]
    print(f"cap of {max_seeds} seeds reached; still unclear: {', '.join(undecided)}", flush=True)
    return 0

