"""Names a trial shares with the layers above it: the trial keys that are not GANConfig fields
and the per-task metrics a trial reports. Plain constants (no Ray, no torch), so that
search_spaces and orchestrator.schema import them from here instead of keeping copies."""
from __future__ import annotations

# Trial keys the orchestrator and the Tune wrapper use; every other key is a GANConfig field.
ORCHESTRATOR_KEYS = ("steps_per_iteration", "iterations", "samples_kept", "config_id", "baseline_key")
# Reported per task as "<name>/<task>" (trainables.metrics computes them; nn_ratio and copy_ct,
# its copying measures, since schema version 2).
METRIC_NAMES = ("fid", "kid", "precision", "recall", "accuracy", "nn_ratio", "copy_ct")
LOSS_NAMES = ("g_loss", "d_loss")
