"""--until-decisive: blocks of fresh seeds until each task crosses its O'Brien-Fleming boundary or the
cap; the blocks here are synthetic runs with a planted truth (the sweep side is the ordinary sweep)."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator import testing
from orchestrator.schema import RunLocation
from orchestrator.sequential import run_until_decisive, seed_blocks, without_flags
from orchestrator.sweep import main


def test_seed_blocks_and_argv_rewriting() -> None:
    assert seed_blocks([0, 1, 2], 8) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert seed_blocks([5], 1) == [[5]]
    assert without_flags(["--space", "smoke", "--until-decisive", "--max-seeds=9", "--seeds", "0,1", "--name", "x"],
                         {"--until-decisive": False, "--max-seeds": True, "--seeds": True, "--name": True}) == \
        ["--space", "smoke"]


def _synthetic_block(run: Path, seeds: list[int], planted: dict[str, float], regimes: bool = False) -> None:
    testing.write_synthetic_run(run, seeds=len(seeds), alphas=(0.1, 1.0), benefit=planted, iterations=2,
                                early_stop_fraction=0, diverged_fraction=0, error_fraction=0, samples="none",
                                rng_seed=seeds[0], sweep=run.name, widths=(64, 128) if regimes else (64,))
    table = pq.read_table(run / "trials.parquet")
    frame = table.to_pandas()
    if regimes:  # width stands in for the data regime: 64 -> 10 images per task, 128 -> all
        table = table.set_column(table.schema.get_field_index("samples_per_task"), "samples_per_task",
                                 pa.array([10 if w == 64 else None for w in frame["width"]], pa.int64()))
    table = table.set_column(table.schema.get_field_index("seed"), "seed",
                             pa.array(frame["seed"] + seeds[0], pa.int64()))
    table = table.set_column(table.schema.get_field_index("baseline_key"), "baseline_key",
                             pa.array(frame["baseline_key"] + f"-{seeds[0]}"))
    pq.write_table(table, run / "trials.parquet")


def test_blocks_run_until_the_planted_effect_is_decided_and_stop_at_the_cap(tmp_path: Path, capsys) -> None:
    storage = RunLocation(tmp_path)
    ran: list[list[int]] = []

    def run_block(seeds: list[int], name: str) -> int:
        ran.append(seeds)
        _synthetic_block(tmp_path / name, seeds, {"2": -6.0})
        return 0

    assert run_until_decisive(run_block, storage, "seq", [0, 1, 2, 3, 4, 5], 18) == 0
    record = json.loads((tmp_path / "seq.sequential.json").read_text())
    assert record["decided"]["2"]["verdict"] == "negative_transfer"
    assert set(record["decided"]) == {"2"}  # the null tasks are never called
    assert ran == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 16, 17]]  # to the cap
    bounds = [b["bound_z"] for b in record["blocks"]]
    assert bounds[0] > bounds[1] > bounds[2]  # O'Brien-Fleming: strict early, near-fixed at the end
    assert "still unclear: 0, 1, 3" in capsys.readouterr().out


def test_each_data_regime_is_decided_on_its_own(tmp_path: Path, capsys) -> None:
    def run_block(seeds: list[int], name: str) -> int:
        _synthetic_block(tmp_path / name, seeds, {"2": -6.0}, regimes=True)
        return 0

    assert run_until_decisive(run_block, RunLocation(tmp_path), "reg", [0, 1, 2, 3, 4, 5], 12) == 0
    record = json.loads((tmp_path / "reg.sequential.json").read_text())
    assert set(record["blocks"][0]["verdicts"]) == {f"{r}:{t}" for r in ("10", "all") for t in "0123"}
    # the planted loss is found in both regimes (a null task may be called too: each regime's family
    # is at 5%, so two families with two looks call one now and then)
    assert {k: record["decided"][k]["verdict"] for k in ("10:2", "all:2")} == {"10:2": "negative_transfer",
                                                                               "all:2": "negative_transfer"}
    assert "task 2 (10 images): negative_transfer" in capsys.readouterr().out


def test_until_decisive_refuses_bad_flags_before_anything_runs(tmp_path: Path, capsys) -> None:
    assert main(["--until-decisive", "--seeds", "0,1", "--storage", str(tmp_path)]) == 2
    assert "--max-seeds" in capsys.readouterr().err
    assert main(["--until-decisive", "--seeds", "0,1,2", "--max-seeds", "2", "--storage", str(tmp_path)]) == 2
    assert "below the first block" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
