"""Population of multi-task DCGAN-style convolutional GANs: K arms × n tasks as grouped convolutions.

The convolutional counterpart of the MLP population (``trainables.model``): every layer holds
the kernels of all arms and tasks in one tensor with leading dimensions (arms, tasks), and a
forward pass over every arm and task is one grouped convolution per layer (groups = A·T) — no
Python loop over tasks or arms. Activations travel in the *grouped layout* (B, A·T·C, H, W):
model g = (arm, task) owns channels [g·C, (g+1)·C), so a grouped convolution, a per-channel
bias and a per-group normalisation act on each model separately.

Layers offer the same interface as the MLP's ``PopLinear`` (``sharing``, ``pull_penalty``,
``pull_``, ``update_shared``) and the networks the same as ``PopMLP`` (``forward`` over
(A, T, B, ...) with flattened images, ``forward_task``, ``soft_layers``, ``shareable_layers``,
``pull_penalty``, ``pull_``, ``update_shared``, ``arm_parameters``), so the training step drives
either. Sharing acts on the first ``share_g`` generator blocks and the last ``share_d``
discriminator blocks (CoGAN: generators share the high-level synthesis, discriminators the
high-level judgement). A ``hard`` layer holds one kernel per arm, shape (A, 1, ...), expanded
over the tasks in the forward pass (gradients of the expansion sum over the tasks).

Shapes: an image side ``size`` is reached from a ``base`` × ``base`` start (4 ≤ base ≤ 7) by
``ups`` doublings (16 → 4·2², 28 → 7·2², 32 → 4·2³, 64 → 4·2⁴). The generator is DCGAN's: a
transposed convolution from the 1×1 latent to base×base, then 4×4 stride-2 transposed
convolutions, a per-sample normalisation (group norm over each model's channels: no batch
statistics, so a sample never depends on the others in its batch and no running state is
kept) and ReLU, tanh at the end. The discriminator mirrors it with 4×4 stride-2 convolutions and
LeakyReLU(0.2), then a base×base convolution to its output (one logit, or a feature vector
when it serves as an encoder).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from trainables.model import PopNetwork

LEAK = 0.2
INIT_STD = 0.02  # DCGAN (Radford et al. 2016): kernels from N(0, 0.02)
MIN_SIZE, MAX_SIZE = 8, 128
# The activations' memory layout going into each convolution; None: NHWC (channels-last) on
# CUDA, NCHW elsewhere. On an H200 cuDNN's NHWC grouped convolutions ran a 64-arm population
# 1.9x (fp32) and 1.5x (bf16) faster than NCHW, layout changes around group norm included
# (bench/bench_conv.py, whose nchw variant sets torch.contiguous_format here).
MEMORY_FORMAT: torch.memory_format | None = None


def conv_geometry(size: int) -> tuple[int, int]:
    """(base, ups) with base · 2**ups == size and 4 <= base <= 7, ups >= 1."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"conv arch needs an image side of {MIN_SIZE}..{MAX_SIZE} px, got {size}")
    ups = 0
    while size % (2 ** (ups + 1)) == 0 and size // 2 ** (ups + 1) >= 4:
        ups += 1
    base = size // 2 ** ups
    if ups < 1 or base > 7:
        raise ValueError(f"conv arch needs an image side of the form b·2^k with 4 <= b <= 7, k >= 1 "
                         f"(16, 28, 32, 64, ...), got {size}")
    return base, ups


def to_grouped(x: torch.Tensor) -> torch.Tensor:
    """(A, T, B, C, H, W) → (B, A·T·C, H, W)."""
    a, t, b, c, h, w = x.shape
    return x.permute(2, 0, 1, 3, 4, 5).reshape(b, a * t * c, h, w)


def from_grouped(x: torch.Tensor, arms: int, tasks: int) -> torch.Tensor:
    """(B, A·T·C, H, W) → (A, T, B, C, H, W)."""
    b, _, h, w = x.shape
    return x.view(b, arms, tasks, -1, h, w).permute(1, 2, 0, 3, 4, 5)


class PopConv(nn.Module):
    """A 2-D convolution (or transposed convolution) per (arm, task), optionally tied to each
    arm's shared representation S (see ``trainables.model`` for the three sharings)."""

    def __init__(self, n_tasks: int, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 sharing: str, generators: list[torch.Generator], transposed: bool = False) -> None:
        super().__init__()
        if sharing not in ("independent", "soft", "hard"):
            raise ValueError(f"unknown sharing {sharing!r}")
        self.n_tasks, self.c_in, self.c_out = n_tasks, c_in, c_out
        self.stride, self.padding, self.transposed = stride, padding, transposed
        self.sharing = sharing
        # torch's kernel layouts: conv (out, in, k, k), transposed conv (in, out, k, k).
        shape = (c_in, c_out, kernel, kernel) if transposed else (c_out, c_in, kernel, kernel)
        # Each arm draws from its own generator; every task of an arm starts from the same draw
        # (soft with α = 0 is then exactly independent, and hard starts where the others start).
        weight = torch.stack([torch.randn(1, *shape, generator=g) * INIT_STD for g in generators])
        bias = torch.zeros(len(generators), 1, c_out)
        copies = 1 if sharing == "hard" else n_tasks
        self.weight = nn.Parameter(weight.repeat(1, copies, 1, 1, 1, 1))
        self.bias = nn.Parameter(bias.repeat(1, copies, 1))
        if sharing == "soft":
            self.register_buffer("shared_weight", weight.clone())
            self.register_buffer("shared_bias", bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Grouped layout in, (B, A·T·c_in, H, W) → grouped layout out, (B, A·T·c_out, H', W')."""
        arms = self.weight.shape[0]
        x = x.contiguous(memory_format=MEMORY_FORMAT or (torch.channels_last if x.is_cuda else torch.contiguous_format))
        weight, bias = self.weight, self.bias
        if self.sharing == "hard":
            weight = weight.expand(arms, self.n_tasks, *weight.shape[2:])
            bias = bias.expand(arms, self.n_tasks, self.c_out)
        groups = arms * self.n_tasks
        weight = weight.reshape(groups * weight.shape[2], *weight.shape[3:])
        bias = bias.reshape(-1)
        if self.transposed:
            return F.conv_transpose2d(x, weight, bias, self.stride, self.padding, groups=groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, groups=groups)

    def forward_task(self, x: torch.Tensor, arm: int, task: int) -> torch.Tensor:
        """One (arm, task)'s output for a (B, c_in, H, W) input: the loop reference in tests."""
        t = 0 if self.sharing == "hard" else task
        op = F.conv_transpose2d if self.transposed else F.conv2d
        return op(x, self.weight[arm, t], self.bias[arm, t], self.stride, self.padding)

    def pull_penalty(self) -> torch.Tensor:
        """Per arm Σ_i ‖θ_i − S‖² over this layer's kernel and bias (S held fixed): (A,)."""
        return (((self.weight - self.shared_weight) ** 2).flatten(1).sum(1)
                + ((self.bias - self.shared_bias) ** 2).flatten(1).sum(1))

    @torch.no_grad()
    def pull_(self, rate: torch.Tensor) -> None:
        """θ_i ← θ_i − rate·(θ_i − S), rate (A,): a step of the same size on every parameter."""
        for p, s in ((self.weight, self.shared_weight), (self.bias, self.shared_bias)):
            p.lerp_(s, rate.view(-1, *([1] * (p.ndim - 1))))

    @torch.no_grad()
    def update_shared(self) -> None:
        """S ← mean_i θ_i per arm: the exact minimiser of the pull term for the current θ."""
        self.shared_weight.copy_(self.weight.mean(1, keepdim=True))
        self.shared_bias.copy_(self.bias.mean(1, keepdim=True))


class PopConvNet(PopNetwork):
    """The conv generator's and encoder's common base: the sharing interface and the image geometry."""

    def _geometry(self, n_tasks: int, image_shape: tuple[int, int, int]) -> tuple[int, int]:
        self.n_tasks, self.image_shape = n_tasks, tuple(image_shape)
        if image_shape[1] != image_shape[2]:
            raise ValueError(f"conv arch needs square images, got {image_shape[1]}×{image_shape[2]}")
        return conv_geometry(image_shape[1])


def _layer_sharing(mode: str, shared: bool) -> str:
    return mode if shared else "independent"


class ConvGenerator(PopConvNet):
    """DCGAN generator per (arm, task): (A, T, B, z_dim) → (A, T, B, C·H·W) in [-1, 1]."""

    def __init__(self, n_tasks: int, z_dim: int, image_shape: tuple[int, int, int], channels: int,
                 share: int, mode: str, generators: list[torch.Generator]) -> None:
        super().__init__()
        base, ups = self._geometry(n_tasks, image_shape)
        widths = [channels * 2 ** (ups - 1 - k) for k in range(ups)] + [image_shape[0]]
        layers = [PopConv(n_tasks, z_dim, widths[0], base, 1, 0, _layer_sharing(mode, 0 < share),
                          generators, transposed=True)]
        for k in range(ups):
            layers.append(PopConv(n_tasks, widths[k], widths[k + 1], 4, 2, 1,
                                  _layer_sharing(mode, k + 1 < share), generators, transposed=True))
        self.layers = nn.ModuleList(layers)

    def _hidden(self, h: torch.Tensor, groups: int) -> torch.Tensor:
        return F.relu(F.group_norm(h, groups))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        arms, tasks, batch, z_dim = z.shape
        h = z.permute(2, 0, 1, 3).reshape(batch, arms * tasks * z_dim, 1, 1)
        for k, layer in enumerate(self.layers):
            h = layer(h)
            h = self._hidden(h, arms * tasks) if k < len(self.layers) - 1 else torch.tanh(h)
        return from_grouped(h, arms, tasks).reshape(arms, tasks, batch, -1)

    def forward_task(self, z: torch.Tensor, arm: int, task: int) -> torch.Tensor:
        """(B, z_dim) → (B, C·H·W) for one (arm, task): the loop reference."""
        h = z[:, :, None, None]
        for k, layer in enumerate(self.layers):
            h = layer.forward_task(h, arm, task)
            h = self._hidden(h, 1) if k < len(self.layers) - 1 else torch.tanh(h)
        return h.flatten(1)


class ConvEncoder(PopConvNet):
    """DCGAN discriminator trunk per (arm, task): (A, T, B, C·H·W) → (A, T, B, out_dim).

    With ``out_dim`` 1 it is the discriminator (a logit); with a feature size it is the encoder
    E_φ of the feature-space reading (``trainables.feature``)."""

    def __init__(self, n_tasks: int, image_shape: tuple[int, int, int], channels: int, out_dim: int,
                 share: int, mode: str, generators: list[torch.Generator]) -> None:
        super().__init__()
        base, ups = self._geometry(n_tasks, image_shape)
        widths = [image_shape[0]] + [channels * 2 ** k for k in range(ups)]
        n_layers = ups + 1
        shared = lambda k: _layer_sharing(mode, k >= n_layers - share)  # noqa: E731
        layers = [PopConv(n_tasks, widths[k], widths[k + 1], 4, 2, 1, shared(k), generators)
                  for k in range(ups)]
        layers.append(PopConv(n_tasks, widths[-1], out_dim, base, 1, 0, shared(ups), generators))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arms, tasks, batch, _ = x.shape
        h = to_grouped(x.reshape(arms, tasks, batch, *self.image_shape))
        for k, layer in enumerate(self.layers):
            h = layer(h)
            if k < len(self.layers) - 1:
                h = F.leaky_relu(h, LEAK)
        return h.view(batch, arms, tasks, -1).permute(1, 2, 0, 3)

    def forward_task(self, x: torch.Tensor, arm: int, task: int) -> torch.Tensor:
        """(B, C·H·W) → (B, out_dim) for one (arm, task): the loop reference."""
        h = x.reshape(len(x), *self.image_shape)
        for k, layer in enumerate(self.layers):
            h = layer.forward_task(h, arm, task)
            if k < len(self.layers) - 1:
                h = F.leaky_relu(h, LEAK)
        return h.flatten(1)


def n_conv_layers(size: int) -> int:
    """Layers of the conv generator (and discriminator) for an image side: ups + 1."""
    return conv_geometry(size)[1] + 1


def build_conv_networks(n_tasks: int, image_shape: tuple[int, int, int], channels: int, z_dim: int,
                        mode: str, share_g: int, share_d: int,
                        generators: list[torch.Generator]) -> tuple[ConvGenerator, ConvEncoder]:
    """Generator (z → image) sharing its first ``share_g`` blocks, discriminator (image → logit)
    sharing its last ``share_d`` blocks; one arm per generator (its initialisation stream).
    ``channels`` is the width of the generator's last hidden block and the discriminator's first."""
    g = ConvGenerator(n_tasks, z_dim, image_shape, channels, share_g, mode, generators)
    d = ConvEncoder(n_tasks, image_shape, channels, 1, share_d, mode, generators)
    return g, d
