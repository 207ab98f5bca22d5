"""Which networks a group of arms trains: the architecture (``arch``) and the reading of S (``mode``).

- ``arch: mlp`` — 3-layer MLPs on flattened images (``trainables.model``);
  ``arch: conv`` — DCGAN-style convolutional networks (``trainables.conv``). Unset, the arch
  follows the image side: ``conv`` from 28 px on (MNIST-, CIFAR-, CoGAN-sized images, where GAN
  practice is convolutional), ``mlp`` below (8×8 digits, 16-px shapes: an MLP learns them and is
  faster on a CPU).
- modes ``independent``/``soft``/``hard`` read S in parameter space (the mean of the tasks'
  shareable layers); ``feature``/``feature_private`` in feature space (``trainables.feature``).
"""
from __future__ import annotations

import numpy as np
import torch

from trainables.config import ARCHS, FEATURE_MODES
from trainables.conv import ConvEncoder, ConvGenerator, build_conv_networks, n_conv_layers
from trainables.feature import (FEATURE_DIM, FeatureDiscriminator, FeatureGenerator,
                                ProjectionHead, encoder_sharing)
from trainables.model import PopMLP, build_networks

CONV_FROM_SIDE = 28  # image side from which the default arch is conv


def resolve_arch(arch: str | None, image_shape: tuple[int, int, int]) -> str:
    """The arch a config asks for, or the default for its images (see the module docstring)."""
    if arch is not None:
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
        return arch
    return "conv" if min(image_shape[1:]) >= CONV_FROM_SIDE else "mlp"


def build_population(arch: str, mode: str, n_tasks: int, image_shape: tuple[int, int, int], width: int,
                     channels: int, z_dim: int, share_g: int, share_d: int,
                     generators: list[torch.Generator]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(G, D) of a group: ``mode`` is the group's layer sharing (independent/soft/hard) or a
    feature mode; one arm per generator (its initialisation stream)."""
    image_dim = int(np.prod(image_shape))
    if mode in FEATURE_MODES:
        sharing = encoder_sharing(mode)
        if arch == "conv":
            net = ConvGenerator(n_tasks, z_dim + FEATURE_DIM, image_shape, channels, 0, "independent", generators)
            encoder = ConvEncoder(n_tasks, image_shape, channels, FEATURE_DIM, n_conv_layers(image_shape[1]),
                                  sharing, generators)
        else:
            net = PopMLP(n_tasks, [z_dim + FEATURE_DIM, width, width * 2, image_dim], set(), "independent",
                         generators, out_activation="tanh")
            encoder = PopMLP(n_tasks, [image_dim, width * 2, width, FEATURE_DIM], {0, 1, 2}, sharing, generators)
        return FeatureGenerator(net), FeatureDiscriminator(encoder, ProjectionHead(n_tasks, FEATURE_DIM, generators))
    if arch == "conv":
        return build_conv_networks(n_tasks, image_shape, channels, z_dim, mode, share_g, share_d, generators)
    return build_networks(n_tasks, image_dim, width, z_dim, mode, share_g, share_d, generators)
