"""The feature-space reading of the seed's S (``mode: feature`` and its control ``feature_private``).

The source feeds S to both networks and computes it from data — ``generator(z, S)``,
``discriminator(x, S)``, ``S = shared_features(x)`` — and alternates GAN training with an
"update S" step. Made precise here, for every arm and task at once:

- ``shared_features(x) = E_φ(x)``: an encoder, the lower trunk of every discriminator (as in
  CoGAN/UNIT). In ``feature`` mode it is one task-agnostic network per arm (kernels of shape
  (A, 1, ...)): every task's images go through the same E_φ in one batched call. In
  ``feature_private`` it is one encoder per task, (A, T, ...): conditioning without sharing, so a
  sweep separates what conditioning does from what *sharing* the encoder does.
- S = the features s = E_φ(x)/‖E_φ(x)‖ of each task's real batch, stop-gradient wherever they
  condition a network (the unit sphere keeps the pull's scale fixed while φ trains).
- ``generator(z, S)``: G_i(z, s) = G_i([z, s]), conditioned on a feature drawn from its own
  task's real features (instance conditioning, IC-GAN: Casanova et al. 2021). At evaluation s is
  drawn from the task's training features.
- ``discriminator(x, S)``: D_i(x, s) = ψ_i(h) + ⟨V_i s, h⟩ with h = E_φ(x), a projection
  discriminator (Miyato & Koyama 2018) whose per-task head ψ_i, V_i sits on the shared trunk.
- α‖G − S‖² made precise as α·E‖ŝ(G_i(z, s)) − s‖², ŝ = E_φ/‖E_φ‖: the generated image,
  re-encoded, stays close to the feature it was asked for. Its gradient goes to G_i only.
- step 4, "update S": an optimiser step on φ with the λ-weighted discriminator losses of all
  tasks (computed in the discriminator step, applied after the generator step), after which S is
  recomputed from the next real batch.

Conditioning on training features invites copying them: read the memorisation measures of
these arms with that in mind.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from trainables.config import FEATURE, FEATURE_MODES
from trainables.conv import INIT_STD, LEAK, ConvEncoder, ConvGenerator, n_conv_layers
from trainables.precision import forward_autocast

FEATURE_DIM = 32


class ProjectionHead(nn.Module):
    """Per-(arm, task) discriminator head on encoder features: ψ_i(h) + ⟨V_i s, h⟩."""

    def __init__(self, n_tasks: int, dim: int, generators: list[torch.Generator]) -> None:
        super().__init__()

        def draw(*shape: int) -> torch.Tensor:
            # Per arm its own stream; every task of an arm starts from the same draw.
            return torch.stack([torch.randn(1, *shape, generator=g) * INIT_STD
                                for g in generators]).repeat(1, n_tasks, *([1] * len(shape)))

        self.hidden_weight = nn.Parameter(draw(dim, dim))
        self.hidden_bias = nn.Parameter(torch.zeros(len(generators), n_tasks, dim))
        self.out_weight = nn.Parameter(draw(dim))
        self.out_bias = nn.Parameter(torch.zeros(len(generators), n_tasks, 1))
        self.projection = nn.Parameter(draw(dim, dim))

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """h, s (A, T, B, f) → logits (A, T, B, 1)."""
        u = F.leaky_relu(torch.einsum("atbf,atfg->atbg", h, self.hidden_weight)
                         + self.hidden_bias[:, :, None], LEAK)
        logit = torch.einsum("atbf,atf->atb", u, self.out_weight) + self.out_bias
        projected = torch.einsum("atbf,atfg,atbg->atb", s, self.projection, h)
        return (logit + projected)[..., None]

    def forward_task(self, h: torch.Tensor, s: torch.Tensor, arm: int, task: int) -> torch.Tensor:
        """(B, f), (B, f) → (B, 1) for one (arm, task): the loop reference."""
        u = F.leaky_relu(h @ self.hidden_weight[arm, task] + self.hidden_bias[arm, task], LEAK)
        logit = u @ self.out_weight[arm, task] + self.out_bias[arm, task]
        return (logit + ((s @ self.projection[arm, task]) * h).sum(1))[:, None]


class _NoSoftLayers:
    """Feature-mode networks have no parameter-space S: nothing to pull or average."""

    def soft_layers(self) -> list:
        return []

    def pull_penalty(self) -> torch.Tensor:
        return torch.zeros(())

    def pull_(self, rate: torch.Tensor) -> None:
        pass

    def update_shared(self) -> None:
        pass


class FeatureGenerator(_NoSoftLayers, nn.Module):
    """G_i(z, s) = G_i([z, s]) per (arm, task): (A, T, B, z), (A, T, B, f) → (A, T, B, C·H·W).
    ``net`` is an unshared population generator (conv or MLP) whose input is z and s side by side."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, s], -1))

    def forward_task(self, z: torch.Tensor, s: torch.Tensor, arm: int, task: int) -> torch.Tensor:
        return self.net.forward_task(torch.cat([z, s], -1), arm, task)

    def shareable_layers(self) -> list:
        return []

    def arm_parameters(self) -> list[tuple[str, torch.Tensor, bool]]:
        return [("net." + name, p, shared) for name, p, shared in self.net.arm_parameters()]


class FeatureDiscriminator(_NoSoftLayers, nn.Module):
    """D_i(x, s) = head_i(E_φ(x), s) on the encoder trunk E_φ (conv or MLP, image → f): one per
    arm, every layer ``hard`` (``feature``), or one per task, every layer independent
    (``feature_private``)."""

    def __init__(self, encoder: nn.Module, head: ProjectionHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E_φ(x): (A, T, B, C·H·W) → (A, T, B, f), every task in one batched call."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x), s)

    def forward_task(self, x: torch.Tensor, s: torch.Tensor, arm: int, task: int) -> torch.Tensor:
        return self.head.forward_task(self.encoder.forward_task(x, arm, task), s, arm, task)

    def shareable_layers(self) -> list:
        return self.encoder.shareable_layers()

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def arm_parameters(self) -> list[tuple[str, torch.Tensor, bool]]:
        encoder = [("encoder." + name, p, shared) for name, p, shared in self.encoder.arm_parameters()]
        return encoder + [("head." + name, p, False) for name, p in self.head.named_parameters()]


def encoder_sharing(mode: str) -> str:
    """The encoder's layer sharing: one per arm (hard) for ``feature``, per task for the control."""
    if mode not in FEATURE_MODES:
        raise ValueError(f"feature networks need mode {' or '.join(FEATURE_MODES)}, got {mode!r}")
    return "hard" if mode == FEATURE else "independent"


def build_feature_networks(n_tasks: int, image_shape: tuple[int, int, int], channels: int, z_dim: int,
                           mode: str, generators: list[torch.Generator], feature_dim: int = FEATURE_DIM,
                           ) -> tuple[FeatureGenerator, FeatureDiscriminator]:
    """The conv networks of the feature-space reading (see ``trainables.arch`` for both archs)."""
    sharing = encoder_sharing(mode)
    g = FeatureGenerator(ConvGenerator(n_tasks, z_dim + feature_dim, image_shape, channels, 0,
                                       "independent", generators))
    encoder = ConvEncoder(n_tasks, image_shape, channels, feature_dim, n_conv_layers(image_shape[1]),
                          sharing, generators)
    return g, FeatureDiscriminator(encoder, ProjectionHead(n_tasks, feature_dim, generators))


# ------------------------------------------------------------------------------ the step's math
def unit(h: torch.Tensor) -> torch.Tensor:
    """Features on the unit sphere (the last dimension)."""
    return F.normalize(h, dim=-1, eps=1e-8)


def real_features(d: FeatureDiscriminator, real: torch.Tensor) -> torch.Tensor:
    """S of a real batch: s = E_φ(x)/‖E_φ(x)‖, (A, T, B, f), stop-gradient (it conditions)."""
    with torch.no_grad():
        return unit(d.encode(real))


def feature_distance(h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(A, T): E_b ‖h_b/‖h_b‖ − s_b‖² for encoder outputs h = E_φ(G_i(z_b, s_b)): the precise
    α‖G − S‖² term. The caller restricts its gradient to G (``backward(inputs=G's
    parameters)``): E_φ is never trained to agree with G."""
    return ((unit(h) - s) ** 2).sum(-1).mean(-1)


def _per_task(loss_fn, *logits: torch.Tensor) -> torch.Tensor:
    """Apply a per-task GAN loss (n, B) → (n,) to (A, T, B) logits → (A, T)."""
    arms, tasks, batch = logits[0].shape
    return loss_fn(*(x.reshape(arms * tasks, batch) for x in logits)).view(arms, tasks)


def feature_step(g: FeatureGenerator, d: FeatureDiscriminator, opt_g: torch.optim.Optimizer,
                 opt_head: torch.optim.Optimizer, opt_encoder: torch.optim.Optimizer,
                 real: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor, lambdas: torch.Tensor,
                 alpha: torch.Tensor, gan_loss: str, precision: str = "fp32",
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the feature-space reading for every arm and task; returns (g_loss, d_loss,
    pull), each (A, T). ``lambdas`` (A, T), ``alpha`` (A,). ``opt_head`` holds the discriminator
    heads, ``opt_encoder`` φ, ``opt_g`` the generators. Forward passes run at ``precision``
    (``trainables.precision``; the caller sets the step's TF32 flags)."""
    from trainables.model import discriminator_loss, generator_loss

    autocast = lambda: forward_autocast(precision, real.device)  # noqa: E731
    with autocast():
        s = real_features(d, real).float()  # S from data: every task's real batch, one batched call
        # 3a. Discriminator: D_i(x, s) on real pairs and on fakes G_i(z, s) with the same features.
        with torch.no_grad():
            fake = g(z_d, s)
        real_logits, fake_logits = d(real, s)[..., 0].float(), d(fake, s)[..., 0].float()
    d_loss = _per_task(lambda r, f: discriminator_loss(gan_loss, r, f), real_logits, fake_logits)
    opt_head.zero_grad(set_to_none=True)
    opt_encoder.zero_grad(set_to_none=True)
    (lambdas * d_loss).sum().backward()  # φ's gradient is kept for step 4
    opt_head.step()
    # 3b. Generator: fool D_i under the same conditioning, and re-encode to the asked-for feature.
    with autocast():
        h = d.encode(g(z_g, s))  # one encoding serves D_i's judgement and the pull
        logits = d.head(h, s)[..., 0].float()
    g_loss = _per_task(lambda f: generator_loss(gan_loss, f), logits)
    pull = feature_distance(h.float(), s)
    opt_g.zero_grad(set_to_none=True)
    ((lambdas * g_loss).sum() + (alpha[:, None] * pull).sum()).backward(inputs=list(g.parameters()))
    opt_g.step()
    # 4. Update S: φ steps on the λ-weighted discriminator losses; S is recomputed from the next batch.
    opt_encoder.step()
    return g_loss.detach(), d_loss.detach(), pull.detach()


@torch.no_grad()
def training_features(d: FeatureDiscriminator, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Unit features of every task's training images: images (T, N, C·H·W) padded →
    (A, T, N, f); each arm encodes with its own E_φ."""
    arms = d.head.out_bias.shape[0]
    parts = [unit(d.encode(images[None, :, k:k + chunk].expand(arms, -1, -1, -1)))
             for k in range(0, images.shape[1], chunk)]
    return torch.cat(parts, 2)


def uniform_pick(u: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Row indices in [0, length) from uniforms u in (0, 1): floor(u · length), clamped because
    u · length rounds up to length for u just below 1 (e.g. at a power-of-two length). Used
    for the real batches too (trainables.train), which imports it from here."""
    lengths = lengths.to(u.dtype)
    return torch.minimum((u * lengths).long(), lengths.long() - 1)


def draw_features(features: torch.Tensor, lengths: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Features of the training images picked by ``uniforms`` (A, T, k) in (0, 1): (A, T, k, f).
    ``lengths`` (T,) are the tasks' real image counts (the padding is never drawn)."""
    arms, tasks, k = uniforms.shape
    idx = uniform_pick(uniforms, lengths.view(1, -1, 1))
    return torch.gather(features, 2, idx[..., None].expand(-1, -1, -1, features.shape[-1]))
