"""Sweep files: what to try (λ_i, α, sharing mode, seeds, ordinary knobs), as plain Python.

``spec``: a sweep file (YAML, see README.md here) read and validated into a :class:`SweepSpec`.
``expand``: a spec expanded into trial dicts, with the ``config_id``/``baseline_key`` that pair
a shared trial with the independent trial of its seed. No Ray: ``orchestrator.tune_mapping``
maps them to Tune.
"""
from search_spaces.expand import (base_trial, baseline_arm, baseline_arms, baseline_key, baselines_per_seed,
                                  config_id, dunnett_baselines, expand_trials, gan_fields, knob_combinations,
                                  sample_shared_configs, with_identity)
from search_spaces.spec import (GAN_KNOBS, SCHEDULERS, SEARCHES, SPACES_DIR, SweepSpec, available_spaces,
                                check_against_tasks, load_space, space_path)

__all__ = ["GAN_KNOBS", "SCHEDULERS", "SEARCHES", "SPACES_DIR", "SweepSpec", "available_spaces", "base_trial",
           "baseline_arm", "baseline_arms", "baseline_key", "baselines_per_seed", "check_against_tasks", "config_id",
           "dunnett_baselines", "expand_trials", "gan_fields",
           "knob_combinations", "load_space", "sample_shared_configs", "space_path", "with_identity"]
