"""Train, evaluate and checkpoint one multi-task GAN (plain PyTorch; knows nothing of Ray).

One step is: a discriminator update of all n tasks at once, a generator update of all n tasks
at once, then (soft sharing) S ← mean_i θ_i. Losses are weighted by λ_i; the pull term
``α Σ_i ‖θ_i − S‖²`` is added to the loss of the network whose layers it concerns.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trainables.config import GANConfig
from trainables.data import TaskSet, load_tasks
from trainables.model import build_networks, discriminator_loss, generator_loss

if TYPE_CHECKING:
    from trainables.metrics import TaskMetrics

# Evaluation noise is fixed per trial so successive evaluations compare like with like and
# never consume the training random stream.
EVAL_SEED_OFFSET = 10_007


class DivergenceError(RuntimeError):
    """A loss or parameter became NaN/Inf."""

    def __init__(self, step: int, task: str, what: str) -> None:
        super().__init__(f"diverged at step {step}, task {task}: {what} is not finite")
        self.step = step
        self.task = task
        self.what = what

    def __reduce__(self):  # picklable across processes (Ray)
        return (DivergenceError, (self.step, self.task, self.what))


class MultiTaskGAN:
    """n GANs (G_i, D_i) trained together, with optional sharing through S."""

    def __init__(self, config: GANConfig, tasks: TaskSet | None = None, device: str | torch.device = "cpu",
                 metrics_cache_dir: str | None = None, reference_tasks: TaskSet | None = None) -> None:
        """``tasks`` are the training data (loaded from ``config`` when None). ``reference_tasks``
        are what quality is measured against: the same tasks without the ``samples_per_task``
        cap (loaded when None), so runs with different caps share one metric classifier and
        one yardstick, and the held-out split stays the one fixed split per task."""
        self.config = config
        self.device = torch.device(device)
        self.tasks = tasks if tasks is not None else load_tasks(
            config.data, samples_per_task=config.samples_per_task, test_fraction=config.test_fraction)
        self._reference_tasks = reference_tasks
        n = self.tasks.n_tasks
        self.lambdas = torch.tensor(config.task_lambdas(n), dtype=torch.float32, device=self.device)
        self.image_shape = self.tasks.image_shape
        image_dim = int(np.prod(self.image_shape))

        init_rng = torch.Generator().manual_seed(config.seed)
        self.G, self.D = build_networks(n, image_dim, config.width, config.z_dim, config.mode,
                                        config.share_g, config.share_d, init_rng)
        self.G.to(self.device)
        self.D.to(self.device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
        self.rng = torch.Generator(device=self.device).manual_seed(config.seed + 1)
        self.step = 0

        # All tasks' training images in one padded tensor so a batch for every task is one gather.
        lengths = [len(t.train) for t in self.tasks.tasks]
        padded = np.zeros((n, max(lengths), image_dim), dtype=np.float32)
        for i, t in enumerate(self.tasks.tasks):
            padded[i, : lengths[i]] = t.train.reshape(lengths[i], -1)
        self._train_images = torch.from_numpy(padded).to(self.device)
        self._train_lengths = torch.tensor(lengths, dtype=torch.float32, device=self.device)[:, None]
        self._task_index = torch.arange(n, device=self.device)[:, None]
        self._metrics = None
        self._metrics_cache_dir = metrics_cache_dir

    # ----------------------------------------------------------------------------- training
    def _real_batch(self) -> torch.Tensor:
        u = torch.rand(self.tasks.n_tasks, self.config.batch_size, generator=self.rng, device=self.device)
        idx = (u * self._train_lengths).long()
        return self._train_images[self._task_index, idx]

    def _noise(self) -> torch.Tensor:
        return torch.randn(self.tasks.n_tasks, self.config.batch_size, self.config.z_dim,
                           generator=self.rng, device=self.device)

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One D and one G update for all tasks; returns per-task (g_loss, d_loss)."""
        cfg = self.config
        soft = cfg.mode == "soft"

        real = self._real_batch()
        fake = self.G(self._noise()).detach()
        d_loss = discriminator_loss(cfg.gan_loss, self.D(real)[..., 0], self.D(fake)[..., 0])
        d_total = (self.lambdas * d_loss).sum()
        if soft:  # also at α=0, where it adds exactly nothing (a tested property)
            d_total = d_total + cfg.alpha * self.D.pull_penalty()
        self.opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        self.opt_d.step()

        g_loss = generator_loss(cfg.gan_loss, self.D(self.G(self._noise()))[..., 0])
        g_total = (self.lambdas * g_loss).sum()
        if soft:
            g_total = g_total + cfg.alpha * self.G.pull_penalty()
        self.opt_g.zero_grad(set_to_none=True)
        g_total.backward()
        self.opt_g.step()

        if soft:
            self.G.update_shared()
            self.D.update_shared()
        self.step += 1
        return g_loss.detach(), d_loss.detach()

    def train(self, steps: int) -> dict[str, np.ndarray]:
        """Run ``steps`` steps; return the mean per-task losses over them.

        Losses are collected on the device and checked once at the end (no per-step host
        sync); the first non-finite one names the step and task of the divergence.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        n = self.tasks.n_tasks
        losses = torch.empty(steps, 2, n, device=self.device)
        first_step = self.step
        for k in range(steps):
            g, d = self.train_step()
            # In execution order (D updates first), so the first non-finite entry is the origin:
            # through shared layers a NaN spreads to every task's later losses.
            losses[k, 0] = d
            losses[k, 1] = g
        losses = losses.cpu()
        bad = ~torch.isfinite(losses)
        if bad.any():
            k, which, task = (int(v) for v in bad.nonzero()[0])
            raise DivergenceError(first_step + k + 1, self.tasks.names[task],
                                  ("discriminator" if which == 0 else "generator") + " loss")
        self._check_parameters()
        mean = losses.mean(0).numpy().astype(np.float64)
        return {"g_loss": mean[1], "d_loss": mean[0]}

    def _check_parameters(self) -> None:
        for net_name, net in (("generator", self.G), ("discriminator", self.D)):
            for name, p, shared in net.per_task_parameters():
                finite = torch.isfinite(p.detach()).flatten(1).all(1)
                if not bool(finite.all()):
                    task = "shared" if shared else self.tasks.names[int((~finite).nonzero()[0])]
                    raise DivergenceError(self.step, task, f"{net_name} parameter {name}")

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def sample(self, k: int, seed: int | None = None) -> np.ndarray:
        """k images per task, float32 (n, k, C, H, W) in [-1, 1], from fixed evaluation noise."""
        rng = torch.Generator(device=self.device).manual_seed(
            self.config.seed + EVAL_SEED_OFFSET if seed is None else seed)
        z = torch.randn(self.tasks.n_tasks, k, self.config.z_dim, generator=rng, device=self.device)
        x = self.G(z)
        return x.reshape(self.tasks.n_tasks, k, *self.image_shape).cpu().numpy()

    def metrics(self) -> "TaskMetrics":
        """The TaskMetrics of the reference tasks, built on first use (it trains or loads a classifier)."""
        if self._metrics is None:
            from trainables.metrics import TaskMetrics
            self._metrics = TaskMetrics(self.reference_tasks(), cache_dir=self._metrics_cache_dir,
                                        device=str(self.device))
        return self._metrics

    def evaluate(self) -> list[dict[str, float]]:
        """Per-task quality of ``eval_samples`` generated images against the held-out split."""
        return self.metrics().evaluate(self.sample(self.config.eval_samples))

    def reference_tasks(self) -> TaskSet:
        """The uncapped tasks that metrics are computed against (see __init__)."""
        if self._reference_tasks is None:
            self._reference_tasks = self.tasks if self.config.samples_per_task is None else load_tasks(
                self.config.data, samples_per_task=None, test_fraction=self.config.test_fraction)
        return self._reference_tasks

    @torch.no_grad()
    def sharing_spread(self) -> float:
        """Mean over tasks of Σ‖θ_i − mean_j θ_j‖² over the shareable layers (0 in hard mode)."""
        total = 0.0
        for net, shared in ((self.G, range(self.config.share_g)),
                            (self.D, range(len(self.D.layers) - self.config.share_d, len(self.D.layers)))):
            for k in shared:
                layer = net.layers[k]
                for p in (layer.weight, layer.bias):
                    total += float(((p - p.mean(0, keepdim=True)) ** 2).sum()) / self.tasks.n_tasks
        return total

    # -------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "step": self.step,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": self.rng.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != self.config.to_dict():
            raise ValueError("checkpoint was written for a different configuration")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        # Generator states are CPU byte tensors even for a CUDA generator; map_location may
        # have moved it.
        self.rng.set_state(state["rng"].cpu())
        self.step = int(state["step"])
