"""Multi-task MLP GAN: n generators and n discriminators evaluated in one batched matmul each.

Every layer holds the weights of all n tasks in one tensor of shape (n, in, out), so a forward
pass over all tasks is a single ``baddbmm`` per layer instead of a Python loop over tasks
(small GANs leave the hardware idle; batching tasks is where speed comes from).

Sharing (the seed's objective ``Σ λ_i L_i + α Σ_i ‖θ_i − S‖²``) acts on the *shareable* layers:
the first ``share_g`` layers of each G_i and the last ``share_d`` layers of each D_i, as in
CoGAN (Liu & Tuzel 2016: generators share the high-level synthesis, discriminators the
high-level judgement).

- ``independent``: no S; tasks never interact (the baseline).
- ``soft``: each task keeps its own θ_i; S is a buffer (not trained by gradient) holding the
  mean of the θ_i, and the loss adds ``α ‖θ_i − S‖²``. For a fixed θ the minimiser of
  ``Σ_i ‖θ_i − S‖²`` over S is the mean of the θ_i, so S's own update step (seed §3.3 step 4) is
  that closed form (mean-regularised multi-task learning, Evgeniou & Pontil 2004).
- ``hard``: the shareable layers *are* S, one tensor used by every task (the α→∞ limit of soft).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LEAK = 0.2


class TaskLinear(nn.Module):
    """n linear layers (one per task), optionally tied to a shared representation S."""

    def __init__(self, n_tasks: int, d_in: int, d_out: int, sharing: str,
                 generator: torch.Generator) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        # Every task starts from the same draw, in every mode: the spread of the θ_i around S
        # then comes from training alone, soft with α=0 reproduces independent exactly, and
        # hard starts where the others start.
        weight = ((torch.rand(1, d_in, d_out, generator=generator) * 2 - 1) * bound).repeat(n_tasks, 1, 1)
        bias = ((torch.rand(1, 1, d_out, generator=generator) * 2 - 1) * bound).repeat(n_tasks, 1, 1)
        self.sharing = sharing
        if sharing == "hard":
            self.weight = nn.Parameter(weight[:1].clone())
            self.bias = nn.Parameter(bias[:1].clone())
        else:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias)
        if sharing == "soft":
            self.register_buffer("shared_weight", weight.mean(0, keepdim=True))
            self.register_buffer("shared_bias", bias.mean(0, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sharing == "hard":
            return torch.matmul(x, self.weight) + self.bias
        return torch.baddbmm(self.bias, x, self.weight)

    def forward_task(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """One task's output, for the loop reference in tests."""
        i = 0 if self.sharing == "hard" else task
        return x @ self.weight[i] + self.bias[i]

    def pull_penalty(self) -> torch.Tensor:
        """Σ_i ‖θ_i − S‖² over this layer's weight and bias (S held fixed)."""
        return ((self.weight - self.shared_weight) ** 2).sum() + ((self.bias - self.shared_bias) ** 2).sum()

    @torch.no_grad()
    def update_shared(self) -> None:
        """S ← mean_i θ_i: the exact minimiser of the pull term for the current θ."""
        self.shared_weight.copy_(self.weight.mean(0, keepdim=True))
        self.shared_bias.copy_(self.bias.mean(0, keepdim=True))


class TaskMLP(nn.Module):
    """A stack of TaskLinear layers with LeakyReLU between them."""

    def __init__(self, n_tasks: int, sizes: list[int], shared_layers: set[int], mode: str,
                 generator: torch.Generator, out_activation: str | None = None) -> None:
        super().__init__()
        layer_mode = lambda k: mode if (k in shared_layers and mode != "independent") else "independent"  # noqa: E731
        self.layers = nn.ModuleList(
            TaskLinear(n_tasks, sizes[k], sizes[k + 1], layer_mode(k), generator)
            for k in range(len(sizes) - 1))
        self.out_activation = out_activation

    def _activate(self, h: torch.Tensor, k: int) -> torch.Tensor:
        if k < len(self.layers) - 1:
            return F.leaky_relu(h, LEAK)
        return torch.tanh(h) if self.out_activation == "tanh" else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, layer in enumerate(self.layers):
            x = self._activate(layer(x), k)
        return x

    def forward_task(self, x: torch.Tensor, task: int) -> torch.Tensor:
        for k, layer in enumerate(self.layers):
            x = self._activate(layer.forward_task(x, task), k)
        return x

    def soft_layers(self) -> list[TaskLinear]:
        return [layer for layer in self.layers if layer.sharing == "soft"]

    def pull_penalty(self) -> torch.Tensor:
        return sum((layer.pull_penalty() for layer in self.soft_layers()),
                   torch.zeros((), device=self.layers[0].weight.device))

    def update_shared(self) -> None:
        for layer in self.soft_layers():
            layer.update_shared()

    def per_task_parameters(self) -> list[tuple[str, torch.Tensor, bool]]:
        """(name, tensor, is_shared) for finding which task a non-finite value belongs to."""
        return [(name, p, p.shape[0] == 1 and layer.sharing == "hard")
                for layer in self.layers for name, p in layer.named_parameters()]


N_LAYERS = 3


def build_networks(n_tasks: int, image_dim: int, width: int, z_dim: int, mode: str,
                   share_g: int, share_d: int, generator: torch.Generator) -> tuple[TaskMLP, TaskMLP]:
    """Generator (z → image) sharing its first ``share_g`` layers, discriminator (image → logit)
    sharing its last ``share_d`` layers."""
    g = TaskMLP(n_tasks, [z_dim, width, width * 2, image_dim], set(range(share_g)), mode,
                generator, out_activation="tanh")
    d = TaskMLP(n_tasks, [image_dim, width * 2, width, 1], set(range(N_LAYERS - share_d, N_LAYERS)),
                mode, generator)
    return g, d


def generator_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """Per-task generator loss from logits D_i(G_i(z)) of shape (n, B); mean over B.

    ``minimax`` is the seed's ``E log(1 − D(G(z)))``: when D confidently rejects the fakes
    (early training) its gradient ``−σ(l)`` vanishes, so G stops learning: it saturates.
    ``nonsaturating`` minimises ``−E log D(G(z))`` instead (same fixed point, strong gradient
    when G is bad; Goodfellow et al. 2014). ``hinge`` is ``−E D(G(z))`` (Lim & Ye 2017).
    """
    if kind == "minimax":
        g = -F.softplus(fake_logits)
    elif kind == "nonsaturating":
        g = F.softplus(-fake_logits)
    elif kind == "hinge":
        g = -fake_logits
    else:
        raise ValueError(f"unknown gan_loss {kind!r}")
    return g.mean(1)


def discriminator_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Per-task discriminator loss (n,), mean over the batch."""
    if kind == "hinge":
        d = F.relu(1 - real_logits) + F.relu(1 + fake_logits)
    else:  # minimax and nonsaturating share the discriminator's cross-entropy
        d = F.softplus(-real_logits) + F.softplus(fake_logits)
    return d.mean(1)
