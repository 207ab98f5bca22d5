"""Population of multi-task MLP GANs: K arms × n tasks, every layer one batched matmul.

An *arm* is one configuration (mode, α, λ, seed) of the multi-task GAN. Every layer holds the
weights of all arms and tasks in one tensor with leading dimensions (arms, tasks) — shape
(A, T, in, out) — so a forward pass over every arm and task is one ``baddbmm`` per layer (small
GANs leave the hardware idle; batching is where speed comes from). Arms are always dimension
0 of every parameter and buffer, so dropping or copying arms is generic (:func:`select_arms`,
:func:`copy_arm`) and a later layer type (grouped convolutions, groups = A·T) needs only the
same small interface: ``forward`` over (A, T, B, ...), ``sharing``, ``pull_penalty``, ``pull_``
and ``update_shared``.

Sharing (the seed's objective ``Σ λ_i L_i + α Σ_i ‖θ_i − S‖²``) acts on the *shareable* layers:
the first ``share_g`` layers of each G_i and the last ``share_d`` layers of each D_i, as in
CoGAN (Liu & Tuzel 2016: generators share the high-level synthesis, discriminators the
high-level judgement). A layer's sharing is one of

- ``independent``: no S; tasks never interact (the baseline).
- ``soft``: each task keeps its own θ_i; S is a buffer (not trained by gradient) holding each
  arm's mean of its θ_i, and θ_i is pulled towards it with the arm's own α. For a fixed θ the
  minimiser of ``Σ_i ‖θ_i − S‖²`` over S is the mean of the θ_i, so S's own update step (seed
  §3.3 step 4) is that closed form (mean-regularised multi-task learning, Evgeniou & Pontil
  2004). An independent arm is a soft arm with α = 0 (exactly: a tested property), so the two
  share one group.
- ``hard``: the shareable layers *are* S, one tensor per arm used by every task (the α→∞ limit
  of soft); shape (A, 1, in, out), so hard arms form their own groups.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LEAK = 0.2


class PopLinear(nn.Module):
    """A linear layer per (arm, task), optionally tied to each arm's shared representation S."""

    def __init__(self, n_tasks: int, d_in: int, d_out: int, sharing: str,
                 generators: list[torch.Generator]) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        # Each arm draws from its own generator, so an arm starts where it would start alone.
        # Every task of an arm starts from the same draw, in every mode: the spread of the θ_i
        # around S then comes from training alone, soft with α=0 reproduces independent
        # exactly, and hard starts where the others start.
        draws = [((torch.rand(1, d_in, d_out, generator=g) * 2 - 1) * bound,
                  (torch.rand(1, 1, d_out, generator=g) * 2 - 1) * bound) for g in generators]
        weight = torch.stack([w for w, _ in draws])  # (A, 1, in, out)
        bias = torch.stack([b for _, b in draws])  # (A, 1, 1, out)
        self.sharing = sharing
        copies = 1 if sharing == "hard" else n_tasks
        self.weight = nn.Parameter(weight.repeat(1, copies, 1, 1))
        self.bias = nn.Parameter(bias.repeat(1, copies, 1, 1))
        if sharing == "soft":
            self.register_buffer("shared_weight", weight.clone())
            self.register_buffer("shared_bias", bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (A, T, B, in) → (A, T, B, out)."""
        arms, tasks, batch, _ = x.shape
        # A hard layer's one tensor serves every task (expand). One batched product per (arm,
        # task) in every mode, so an arm computes alike alone and in any group.
        weight = self.weight.expand(arms, tasks, -1, -1)
        bias = self.bias.expand(arms, tasks, -1, -1)
        if weight.shape[-1] == 1:  # a logit: a dot product per sample, cheaper than a batched GEMV
            return (x * weight[..., 0][:, :, None]).sum(-1, keepdim=True) + bias
        out = torch.baddbmm(bias.flatten(0, 1), x.reshape(arms * tasks, batch, -1), weight.flatten(0, 1))
        return out.view(arms, tasks, batch, -1)

    def forward_task(self, x: torch.Tensor, arm: int, task: int) -> torch.Tensor:
        """One (arm, task)'s output for a (B, in) input: the loop reference in tests."""
        t = 0 if self.sharing == "hard" else task
        return x @ self.weight[arm, t] + self.bias[arm, t]

    def pull_penalty(self) -> torch.Tensor:
        """Per arm Σ_i ‖θ_i − S‖² over this layer's weight and bias (S held fixed): (A,)."""
        return (((self.weight - self.shared_weight) ** 2).sum((1, 2, 3))
                + ((self.bias - self.shared_bias) ** 2).sum((1, 2, 3)))

    @torch.no_grad()
    def pull_(self, rate: torch.Tensor) -> None:
        """θ_i ← θ_i − rate·(θ_i − S), rate (A,): a step of the same size on every parameter."""
        for p, s in ((self.weight, self.shared_weight), (self.bias, self.shared_bias)):
            p.lerp_(s, rate.view(-1, 1, 1, 1))

    @torch.no_grad()
    def update_shared(self) -> None:
        """S ← mean_i θ_i per arm: the exact minimiser of the pull term for the current θ."""
        self.shared_weight.copy_(self.weight.mean(1, keepdim=True))
        self.shared_bias.copy_(self.bias.mean(1, keepdim=True))


class PopNetwork(nn.Module):
    """The network-level sharing interface over ``self.layers`` (MLP and conv networks alike)."""

    layers: nn.ModuleList

    def soft_layers(self) -> list[nn.Module]:
        return [layer for layer in self.layers if layer.sharing == "soft"]

    def shareable_layers(self) -> list[nn.Module]:
        return [layer for layer in self.layers if layer.sharing != "independent"]

    def pull_penalty(self) -> torch.Tensor:
        """(A,): Σ over soft layers of each arm's Σ_i ‖θ_i − S‖²."""
        return sum(layer.pull_penalty() for layer in self.soft_layers())

    def pull_(self, rate: torch.Tensor) -> None:
        for layer in self.soft_layers():
            layer.pull_(rate)

    def update_shared(self) -> None:
        for layer in self.soft_layers():
            layer.update_shared()

    def arm_parameters(self) -> list[tuple[str, torch.Tensor, bool]]:
        """(name, tensor (A, T or 1, ...), is_shared): where a non-finite value belongs."""
        return [(f"layers.{k}.{name}", p, layer.sharing == "hard")
                for k, layer in enumerate(self.layers) for name, p in layer.named_parameters()]


class PopMLP(PopNetwork):
    """A stack of PopLinear layers with LeakyReLU between them."""

    def __init__(self, n_tasks: int, sizes: list[int], shared_layers: set[int], mode: str,
                 generators: list[torch.Generator], out_activation: str | None = None) -> None:
        super().__init__()
        layer_mode = lambda k: mode if k in shared_layers else "independent"  # noqa: E731
        self.layers = nn.ModuleList(
            PopLinear(n_tasks, sizes[k], sizes[k + 1], layer_mode(k), generators)
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

    def forward_task(self, x: torch.Tensor, arm: int, task: int) -> torch.Tensor:
        for k, layer in enumerate(self.layers):
            x = self._activate(layer.forward_task(x, arm, task), k)
        return x



N_LAYERS = 3


def build_networks(n_tasks: int, image_dim: int, width: int, z_dim: int, mode: str,
                   share_g: int, share_d: int, generators: list[torch.Generator]) -> tuple[PopMLP, PopMLP]:
    """Generator (z → image) sharing its first ``share_g`` layers, discriminator (image → logit)
    sharing its last ``share_d`` layers; one arm per generator (its initialisation stream)."""
    g = PopMLP(n_tasks, [z_dim, width, width * 2, image_dim], set(range(share_g)), mode,
               generators, out_activation="tanh")
    d = PopMLP(n_tasks, [image_dim, width * 2, width, 1], set(range(N_LAYERS - share_d, N_LAYERS)),
               mode, generators)
    return g, d


@torch.no_grad()
def select_arms(net: nn.Module, index: torch.Tensor) -> None:
    """Keep only the arms ``index`` (in that order) of every parameter and buffer of ``net``."""
    for module in net.modules():
        for name, p in module._parameters.items():
            module._parameters[name] = nn.Parameter(p.detach()[index])
        for name, b in module._buffers.items():
            module._buffers[name] = b[index]


@torch.no_grad()
def copy_arm(net: nn.Module, source: int, target: int) -> None:
    """Arm ``target`` becomes a copy of arm ``source`` (weights and S)."""
    for tensor in list(net.parameters()) + list(net.buffers()):
        tensor[target] = tensor[source]


def generator_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """Per-(arm, task) generator loss from logits D_i(G_i(z)) of shape (..., B); mean over B.

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
    return g.mean(-1)


def discriminator_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Per-(arm, task) discriminator loss, mean over the batch (the last dimension)."""
    if kind == "hinge":
        d = F.relu(1 - real_logits) + F.relu(1 + fake_logits)
    else:  # minimax and nonsaturating share the discriminator's cross-entropy
        d = F.softplus(-real_logits) + F.softplus(fake_logits)
    return d.mean(-1)
