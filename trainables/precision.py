"""Arithmetic precision of a trial's forward passes: ``fp32``, ``tf32`` or ``bf16``.

Convolutional populations are compute-bound on a GPU from ~16 models on (issue 12's H200
measurements), so past batching the lever is the tensor cores:

- ``fp32``: IEEE float32 everywhere (TF32 off for matmuls *and* cuDNN convolutions — PyTorch
  leaves cuDNN's TF32 on by default, so "fp32" must say so).
- ``tf32``: float32 tensors, matmuls and convolutions on TF32 tensor cores (10-bit mantissa
  products, float32 accumulation). No effect on a CPU.
- ``bf16``: forward passes under ``torch.autocast`` with bfloat16 (float32 parameters, optimiser
  state and losses; no loss scaling needed, bfloat16 has float32's range). Works on CPUs too.

A step runs inside ``step_precision`` (TF32 flags, forward and backward); its forward passes
inside ``forward_autocast`` (backward passes and optimiser steps outside autocast, as its
documentation advises); losses are taken in float32.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from trainables.config import PRECISIONS


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


@contextlib.contextmanager
def step_precision(precision: str) -> Iterator[None]:
    """TF32 on (``tf32``) or off (otherwise) for the matmuls and convolutions of the enclosed
    step, forward and backward; restores the process's settings afterwards."""
    check_precision(precision)
    mode = "tf32" if precision == "tf32" else "ieee"
    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode
    try:
        yield
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved


def forward_autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for the enclosed forward passes under ``bf16``, nothing otherwise."""
    check_precision(precision)
    if precision == "bf16":
        # No cast cache: a step may be captured in a CUDA graph, where PyTorch asks for it off.
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()
