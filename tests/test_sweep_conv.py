"""Both readings of S in one sweep on the embedded Ray: feature, feature_private, soft and hard
arms with conv networks on 32-px tasks, paired with the independent baseline, analysed per mode."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from orchestrator import analysis
from orchestrator.sweep import main


def test_conv32_sweep_mixes_feature_and_parameter_space_arms(ray_local, tmp_path):
    storage = tmp_path / "results"
    assert main(["--space", "conv32", "--seeds", "0", "--iterations", "1", "--storage", str(storage),
                 "--name", "conv32"]) == 0
    run_dir = storage / "conv32"
    trials = pd.read_parquet(run_dir / "trials.parquet")
    metrics = pads.dataset(run_dir / "metrics", format="parquet").to_table().to_pandas()
    assert sorted(trials["mode"]) == ["feature", "feature_private", "hard", "independent", "soft"]
    assert set(trials["status"]) == {"TERMINATED"}
    assert set(trials["arch"]) == {"conv"} and (trials["schema_version"] == 2).all()
    assert len(set(trials["baseline_key"])) == 1  # every arm paired with the one baseline
    assert np.isfinite(metrics[["fid", "kid", "g_loss", "d_loss"]].to_numpy()).all()
    images = np.load(trials.loc[trials["mode"] == "feature", "samples_path"].iloc[0])["images"]
    assert images.shape[2:] == (1, 32, 32)

    result = analysis.analyze(analysis.load_runs([run_dir], "fid"), resamples=200)
    assert set(result.by_mode["group"]) == {"feature", "feature_private", "soft", "hard"}
    assert list(result.alpha_curve.alphas) == [-1.0, 1.0]  # hard, soft α; feature's α not pooled in
