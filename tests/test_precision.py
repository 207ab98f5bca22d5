"""Precision contexts (trainables.precision): TF32 flags are set for the step and restored, bf16
autocast runs the conv networks in bfloat16 and stays close to float32."""
from __future__ import annotations

import pytest
import torch

from trainables.conv import build_conv_networks
from trainables.precision import forward_autocast, step_precision


def test_step_precision_sets_and_restores_tf32() -> None:
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    with step_precision("tf32"):
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    with step_precision("fp32"):  # PyTorch's cuDNN default is TF32: fp32 must turn it off
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == before


def test_bf16_autocast_runs_the_conv_networks_in_bfloat16_close_to_fp32() -> None:
    g, d = build_conv_networks(2, (1, 16, 16), 8, 8, "soft", 1, 1, [torch.Generator().manual_seed(0)])
    z = torch.randn(1, 2, 8, 8)
    reference = d(g(z))
    with forward_autocast("bf16", "cpu"):
        low = d(g(z))
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), reference, rtol=0.05, atol=0.02)
    with forward_autocast("tf32", "cpu"):
        assert d(g(z)).dtype == torch.float32


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be one of fp32, tf32, bf16"):
        forward_autocast("fp16", "cpu")
