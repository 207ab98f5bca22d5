"""Sweep files -> trial lists: sampling, pairing structure and validation (pure Python, no Ray)."""
from __future__ import annotations

import math
from collections import Counter

import pytest

import search_spaces as ss
from orchestrator.testing import write_space


def spec_with(**changes) -> ss.SweepSpec:
    return ss.load_space("smoke").with_overrides(**changes)


def test_shipped_spaces_load_and_expand():
    for name in ("smoke", "default", "explore", "full"):
        spec = ss.load_space(name)
        n_tasks = len(spec.data.split("=")[1].split(","))
        trials = ss.expand_trials(spec, n_tasks)
        per_knob = len(ss.knob_combinations(spec)) * len(spec.seeds)
        n_shared = len(ss.sample_shared_configs(spec, n_tasks))
        assert len(trials) == per_knob * (n_shared + ss.baselines_per_seed(spec, n_shared)), name
    # the default design: 3 data regimes x 8 seeds x (soft at 3 α + hard + 2 baselines)
    default = ss.expand_trials(ss.load_space("default"), 4)
    assert len(default) == 144
    assert Counter(t.get("samples_per_task") for t in default) == {10: 48, 50: 48, None: 48}
    assert Counter(t["mode"] for t in default) == {"soft": 72, "independent": 48, "hard": 24}


def test_dirichlet_lambdas_sum_to_n_and_alpha_in_range():
    spec = ss.SweepSpec(**{**ss.load_space("smoke").__dict__, "num_samples": 200, "modes": ("soft",)})
    shared = ss.sample_shared_configs(spec, 4)
    lo, hi = spec.alpha["loguniform"]
    for cfg in shared:
        assert math.isclose(sum(cfg["lambdas"]), 4, abs_tol=1e-4)
        assert all(x >= 0 for x in cfg["lambdas"])
        assert lo <= cfg["alpha"] <= hi
    # log-uniform: about half of the draws below the geometric midpoint
    below = sum(cfg["alpha"] < math.sqrt(lo * hi) for cfg in shared)
    assert 70 < below < 130
    # the λ vectors differ from draw to draw (a real Dirichlet, not a constant)
    assert len({tuple(cfg["lambdas"]) for cfg in shared}) == 200


def test_modes_balanced_and_hard_ignores_alpha():
    shared = ss.sample_shared_configs(spec_with(num_samples=6), 2)
    assert Counter(c["mode"] for c in shared) == {"soft": 3, "hard": 3}
    assert all(c["alpha"] == 0.0 for c in shared if c["mode"] == "hard")
    assert all(c["alpha"] > 0 for c in shared if c["mode"] == "soft")


def test_loguniform_and_grid_lambdas():
    base = ss.load_space("smoke")
    logu = ss.SweepSpec(**{**base.__dict__, "num_samples": 50, "lambdas": {"loguniform": [0.5, 2.0]}})
    for cfg in ss.sample_shared_configs(logu, 3):
        assert all(0.5 <= x <= 2.0 for x in cfg["lambdas"]) and len(cfg["lambdas"]) == 3
    grid = ss.SweepSpec(**{**base.__dict__, "search": "grid", "alpha": {"values": [0.01, 1.0]},
                           "lambdas": {"grid": [[1, 1], [1.5, 0.5]]}})
    shared = ss.sample_shared_configs(grid, 2)
    # soft: 2 α × 2 λ; hard: α collapses, 2 λ
    assert len(shared) == 6
    assert Counter(c["mode"] for c in shared) == {"soft": 4, "hard": 2}


def test_pairing_structure():
    spec = ss.SweepSpec(**{**ss.load_space("smoke").__dict__, "seeds": (0, 1, 2),
                           "knobs": {"samples_per_task": [10, 20]}})
    trials = ss.expand_trials(spec, 2)
    assert len(trials) == 2 * 3 * (spec.num_samples + 1)
    baselines = [t for t in trials if t["mode"] == "independent"]
    # exactly one baseline arm per (seed, knob value), with α=0 and λ=1
    assert Counter((t["seed"], t["samples_per_task"]) for t in baselines) == {
        (s, k): 1 for s in (0, 1, 2) for k in (10, 20)}
    assert all(t["alpha"] == 0 and t["lambdas"] == [1.0, 1.0] for t in baselines)
    assert {t["config_id"] for t in baselines} == {"independent"}
    by_key = {t["baseline_key"]: t for t in baselines}
    assert len(by_key) == len(baselines)
    shared = [t for t in trials if t["mode"] != "independent"]
    for t in shared:
        partner = by_key[t["baseline_key"]]  # every shared trial has its baseline
        assert (partner["seed"], partner["samples_per_task"]) == (t["seed"], t["samples_per_task"])
    # every shared configuration runs at every seed; config_id ignores the seed
    per_config = Counter(t["config_id"] for t in shared)
    assert set(per_config.values()) == {3}
    assert len(per_config) == 2 * spec.num_samples  # knob values are part of a configuration


def test_baseline_replicates_per_seed_dunnett_allocation():
    assert [ss.dunnett_baselines(k) for k in (1, 3, 6, 9, 30)] == [1, 2, 2, 3, 3]
    spec = spec_with(seeds=(0, 1), num_samples=4, baselines_per_seed="auto")
    trials = ss.expand_trials(spec, 2)
    baselines = [t for t in trials if t["mode"] == "independent"]
    # √4 = 2 replicates per seed, numbered, one pairing key and config_id per seed
    assert Counter((t["seed"], t["replicate"]) for t in baselines) == {(s, r): 1 for s in (0, 1) for r in (0, 1)}
    assert {t["config_id"] for t in baselines} == {"independent"}
    for seed in (0, 1):
        keys = {t["baseline_key"] for t in trials if t["seed"] == seed}
        assert len(keys) == 1  # shared trials pair with both replicates of their seed
    # a shared configuration's identity is the one a sweep without replicates gives it
    plain = ss.expand_trials(spec_with(seeds=(0, 1), num_samples=4), 2)
    assert [t for t in trials if t["mode"] != "independent"] == [t for t in plain if t["mode"] != "independent"]
    assert all("replicate" not in t for t in plain)
    three = spec_with(num_samples=4, baselines_per_seed=3)
    assert len(ss.expand_trials(three, 2)) == len(three.seeds) * (4 + 3)
    # a confirmation run (orchestrator.confirm) gives its fresh seeds as many replicates
    from orchestrator.confirm import confirm_trials

    chosen = trials[-1]["config_id"]
    fresh = confirm_trials(trials, [chosen], [9])
    assert [(t["mode"], t.get("replicate"), t["seed"]) for t in fresh][:2] == [("independent", 0, 9),
                                                                               ("independent", 1, 9)]
    assert [t["config_id"] for t in fresh] == ["independent", "independent", chosen]


def test_baseline_replicates_train_apart_on_one_data_subset():
    from trainables.config import GANConfig
    from trainables.train import PopulationGAN

    trials = ss.expand_trials(spec_with(seeds=(5,), num_samples=1, baselines_per_seed=2,
                                        fixed={"samples_per_task": 10, "width": 16, "eval_samples": 8}), 2)
    configs = [GANConfig.from_dict(ss.gan_fields(t)) for t in trials if t["mode"] == "independent"]
    assert [c.replicate for c in configs] == [0, 1] and len({c.group_key() for c in configs}) == 1
    population = PopulationGAN(configs)  # one group: one training pool, the seed's subset
    alone = PopulationGAN(configs[:1], tasks=population.tasks)
    first_layer = next(population.G.parameters())
    assert not first_layer[0].equal(first_layer[1])  # each replicate its own initialisation
    assert first_layer[0].equal(next(alone.G.parameters())[0])  # replicate 0 is the seed's own streams
    assert not population._train_keys[0].equal(population._train_keys[1])


def test_expansion_is_deterministic_and_seeded():
    spec = ss.load_space("smoke")
    assert ss.expand_trials(spec, 2) == ss.expand_trials(spec, 2)
    other = ss.SweepSpec(**{**spec.__dict__, "space_seed": 1})
    assert ss.sample_shared_configs(other, 2) != ss.sample_shared_configs(spec, 2)


def test_gan_fields_build_configs():
    from trainables.config import GANConfig

    for trial in ss.expand_trials(ss.load_space("smoke"), 2):
        cfg = GANConfig.from_dict(ss.gan_fields(trial))
        assert cfg.seed == trial["seed"] and cfg.mode == trial["mode"]


@pytest.mark.parametrize("changes, needle", [
    ({"colour": "blue"}, "unknown key colour"),
    ({"sharing": {"modes": ["soft"], "strength": 1}}, "unknown key sharing.strength"),
    ({"fixed": {"widht": 8}}, "unknown key fixed.widht"),
    ({"knobs": {"lr": 0.1}}, "knobs.lr must be a non-empty list"),
    ({"sharing": {"alpha": {"loguniform": [-1, 1]}}}, "0 < low"),
    ({"sharing": {"alpha": {"normal": [0, 1]}}}, "unknown key sharing.alpha.normal"),
    ({"search": "grid", "sharing": {"alpha": [-0.5, 1.0]}}, "alpha must be a finite number >= 0"),
    ({"sharing": {"lambdas": {"dirichlet": 0}}}, "concentration"),
    ({"sharing": {"modes": ["independent"]}}, "sharing.modes"),
    ({"iterations": 0}, "iterations must be >= 1"),
    ({"num_samples": 0}, "num_samples must be >= 1"),
    ({"seeds": [1, 1]}, "seeds must be distinct"),
    ({"seeds": "0,1"}, "'seeds' must be a list"),
    ({"steps_per_iteration": None}, "missing key 'steps_per_iteration'"),
    ({"search": "bayes"}, "search must be one of"),
    ({"baselines_per_seed": 0}, "baselines_per_seed must be an integer >= 1 or 'auto'"),
    ({"baselines_per_seed": 2, "search": "optuna"}, "baselines_per_seed 2 needs search random or grid"),
])
def test_validation_errors_name_the_key_and_file(tmp_path, changes, needle):
    path = write_space(tmp_path, **changes)
    with pytest.raises(ValueError) as info:
        ss.load_space(path)
    message = str(info.value)
    assert needle in message
    assert path in message and "\n" not in message


def test_lambda_grid_must_match_task_count(tmp_path):
    path = write_space(tmp_path, search="grid",
                       sharing={"alpha": [0.1], "lambdas": {"grid": [[1, 1, 1]]}})
    spec = ss.load_space(path)  # fine on its own: 3 values could be 3 tasks
    with pytest.raises(ValueError, match="3 lambda values for 2 tasks"):
        ss.expand_trials(spec, 2)


def test_unknown_space_and_bad_yaml(tmp_path):
    with pytest.raises(ValueError, match="unknown space 'nope'.*smoke"):
        ss.load_space("nope")
    with pytest.raises(ValueError, match="does not exist"):
        ss.load_space(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        ss.load_space(str(bad))
