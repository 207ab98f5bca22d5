"""Train, evaluate and checkpoint a population of multi-task GANs (plain PyTorch; knows nothing of Ray).

A :class:`PopulationGAN` trains K *arms* (configurations that differ only in mode, α, λ and
seed; see ``GANConfig.group_key``) as one batched model. One step is: a discriminator update of
every arm and task at once, a generator update of every arm and task at once, then (soft
sharing) S ← each arm's mean of its θ_i. Losses are weighted by each arm's λ_i; the pull towards
S is either a decoupled step after each optimiser step (``pull: decoupled``) or
``α Σ_i ‖θ_i − S‖²`` in the loss (``pull: l2``).

An arm never depends on its neighbours: its initialisation, training and evaluation random
streams come from its own seed, and every batched operation is per (arm, task), so an arm
trained in a group ends where it ends alone (tested). On CUDA the whole step is captured as
one CUDA graph (fused Adam), replayed every step. :class:`MultiTaskGAN` is one arm, with the
single-trial API.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from trainables.config import GANConfig
from trainables.data import TaskSet, load_tasks
from trainables.arch import build_population, resolve_arch
from trainables.config import FEATURE_MODES, SOFT
from trainables.feature import draw_features, feature_step, training_features, uniform_pick
from trainables.model import copy_arm, discriminator_loss, generator_loss, select_arms
from trainables.optim import ArmwiseAdam
from trainables.precision import forward_autocast, step_precision

if TYPE_CHECKING:
    from trainables.metrics import TaskMetrics

# ----------------------------------------------------------------------------- random streams
# Each seed spawns independent streams (numpy's SeedSequence: no two seeds' streams overlap,
# unlike manual_seed(seed) and manual_seed(seed + 1)). Training and evaluation draws are
# counter-based: a hash of (the stream's key, the step, the position), so they need no state
# to checkpoint, run the same inside a CUDA graph, and an arm draws the same numbers alone or
# in any group.
INIT_STREAM, TRAIN_STREAM, EVAL_STREAM = range(3)
REAL_DRAW, FAKE_D_DRAW, FAKE_G_DRAW = range(3)
_MASK32 = 0xFFFFFFFF


def stream_keys(seed: int, replicate: int = 0) -> np.ndarray:
    """(3, 2) uint32 keys of the init, train and eval streams of (seed, replicate). Replicate 0
    is the seed's own entropy (SeedSequence pads [seed] with zeros: [seed, 0] is seed itself)."""
    entropy = [seed, replicate] if replicate else seed
    return np.stack([child.generate_state(2) for child in np.random.SeedSequence(entropy).spawn(3)])


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons): a bijection of 32-bit integers with full avalanche, in int64."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32  # wraps past 2^63; the low 32 bits stay exact
    return x ^ (x >> 16)


def counter_uniform(keys: torch.Tensor, counter: torch.Tensor | int, n: int) -> torch.Tensor:
    """(A, n) float32 uniforms in (0, 1) of the streams ``keys`` (A, 2) at ``counter``."""
    salt = _hash32(_hash32((keys[:, 0] + counter) & _MASK32) ^ keys[:, 1])[:, None]
    position = torch.arange(n, device=keys.device, dtype=torch.int64)
    bits = _hash32(_hash32(position ^ salt) ^ keys[:, 1:2]) >> 8  # 24 bits: exact in float32
    # bits + 0.5 is not exact from 2**23 on: the top value rounds to 2**24, u to 1.0 (once in
    # 2**24 draws, which indexed past a task's images on a GPU): keep it below 1.
    return ((bits.to(torch.float32) + 0.5) * (1.0 / (1 << 24))).clamp_max(1.0 - 2.0 ** -24)


def counter_normal(keys: torch.Tensor, counter: torch.Tensor | int, n: int) -> torch.Tensor:
    """(A, n) standard normals (Box–Muller on counter_uniform)."""
    half = (n + 1) // 2
    u = counter_uniform(keys, counter, 2 * half)
    radius = torch.sqrt(-2.0 * torch.log(u[:, :half]))
    angle = (2 * np.pi) * u[:, half:]
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], 1)[:, :n]


class DivergenceError(RuntimeError):
    """A loss or parameter became NaN/Inf."""

    def __init__(self, step: int, task: str, what: str) -> None:
        super().__init__(f"diverged at step {step}, task {task}: {what} is not finite")
        self.step = step
        self.task = task
        self.what = what

    def __reduce__(self):  # picklable across processes (Ray)
        return (DivergenceError, (self.step, self.task, self.what))


def group_mode(configs: Sequence[GANConfig]) -> str:
    """The layer sharing of a group: hard, soft (soft and independent arms) or independent; or
    the group's feature mode (feature-space S, trainables.feature)."""
    modes = {c.mode for c in configs}
    for mode in ("hard", *FEATURE_MODES):
        if mode in modes:
            return mode
    return "soft" if "soft" in modes else "independent"


def arm_alpha(config: GANConfig) -> float:
    """The α an arm's step uses: its own in soft and feature modes, 0 otherwise (an independent
    arm is a soft arm with α = 0)."""
    return config.alpha if config.mode in (SOFT, *FEATURE_MODES) else 0.0


class PopulationGAN:
    """K arms, each n GANs (G_i, D_i) with optional sharing through S, trained as one model.

    ``arm_ids`` are the surviving arms' positions in ``configs``: a diverged arm is recorded in
    ``diverged`` and dropped (the others continue unchanged), as is an arm passed to
    :meth:`drop_arms` (a scheduler stopped it).
    """

    def __init__(self, configs: Sequence[GANConfig], tasks: TaskSet | None = None,
                 device: str | torch.device = "cpu", metrics_cache_dir: str | None = None,
                 reference_tasks: TaskSet | None = None, capture: bool | None = None) -> None:
        """``tasks`` are the training data (loaded from the configs when None); ``reference_tasks``
        what quality is measured against: the same tasks without the ``samples_per_task`` cap
        (loaded when None), so runs with different caps share one metric classifier and one
        yardstick. ``capture``: run each step as a CUDA graph (default: on CUDA)."""
        if not configs:
            raise ValueError("a population needs at least one arm")
        keys = {c.group_key() for c in configs}
        if len(keys) > 1:
            raise ValueError("arms of one group must differ only in mode (hard apart), alpha, lambdas and seed")
        self.arm_configs = list(configs)  # every arm ever in the group, by arm id (its latest config)
        self.configs = list(configs)  # the surviving arms', in arm_ids order
        config = self.configs[0]
        self.device = torch.device(device)
        self.tasks = tasks if tasks is not None else load_tasks(
            config.data, samples_per_task=config.samples_per_task, test_fraction=config.test_fraction,
            subset_seed=config.seed)  # each seed trains on its own subset of a capped pool
        self._reference_tasks = reference_tasks
        self.mode = group_mode(self.configs)
        n = self.tasks.n_tasks
        self.image_shape = self.tasks.image_shape
        image_dim = int(np.prod(self.image_shape))

        keys = [stream_keys(c.seed, c.replicate) for c in self.configs]
        inits = [torch.Generator().manual_seed(int(k[INIT_STREAM, 0]) << 32 | int(k[INIT_STREAM, 1]))
                 for k in keys]
        self.arch = resolve_arch(config.arch, self.image_shape)
        if self.device.type == "cuda" and self.arch == "conv":
            # A trial's convolutions keep their shapes for its life: let cuDNN time its algorithms
            # for each once (in the eager warm-up steps, before the step is captured).
            torch.backends.cudnn.benchmark = True
        self.G, self.D = build_population(self.arch, self.mode, n, self.image_shape, config.width, config.channels,
                                          config.z_dim, config.share_g, config.share_d, inits)
        self.G.to(self.device)
        self.D.to(self.device)
        self.arm_ids = list(range(len(self.configs)))
        self.diverged: dict[int, DivergenceError] = {}
        self._train_keys = torch.tensor(np.stack([k[TRAIN_STREAM] for k in keys]), dtype=torch.int64,
                                        device=self.device)
        self._eval_keys = torch.tensor(np.stack([k[EVAL_STREAM] for k in keys]), dtype=torch.int64,
                                       device=self.device)
        # An independent arm is a soft arm with α = 0 (exactly equal: tested).
        self.alpha = torch.tensor([arm_alpha(c) for c in self.configs],
                                  dtype=torch.float32, device=self.device)
        self.lambdas = torch.tensor([c.task_lambdas(n) for c in self.configs], dtype=torch.float32,
                                    device=self.device)
        self._capture = self.device.type == "cuda" and capture is not False
        self._build_optimizers()
        self.step = 0
        self._step_counter = torch.zeros((), dtype=torch.int64, device=self.device)  # the RNG's counter
        self._graph: torch.cuda.CUDAGraph | None = None
        self._eager_before_capture = 2

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

    def _build_optimizers(self, states: Sequence[dict] | None = None) -> None:
        config = self.configs[0]
        # Fused Adam: on CUDA capturable in a CUDA graph (the same update eager or captured); on the
        # CPU run per arm (trainables.optim: one pass instead of ~10, an arm alone as in a group).
        if self.device.type == "cuda":
            adam = lambda params: torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, 0.999),  # noqa: E731
                                                   fused=True, capturable=True)
        else:
            adam = lambda params: ArmwiseAdam(params, lr=config.lr, betas=(config.beta1, 0.999))  # noqa: E731
        self.opt_g = adam(self.G.parameters())
        # Feature modes: the discriminator heads and the encoder φ step at different moments.
        feature = self.mode in FEATURE_MODES
        self.opt_d = adam(self.D.head_parameters() if feature else self.D.parameters())
        self.opt_phi = adam(self.D.encoder_parameters()) if feature else None
        if states is not None:
            for opt, state in zip(self._optimizers(), states):
                opt.load_state_dict(state)

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_g, self.opt_d] + ([self.opt_phi] if self.opt_phi is not None else [])

    @property
    def n_arms(self) -> int:
        return len(self.arm_ids)

    # ----------------------------------------------------------------------------- training
    def _real_batch(self) -> torch.Tensor:
        """(A, T, B, image_dim): each arm's own draw of training images."""
        n, batch = self.tasks.n_tasks, self.configs[0].batch_size
        u = counter_uniform(self._train_keys, self._step_counter * 3 + REAL_DRAW, n * batch)
        idx = uniform_pick(u.view(-1, n, batch), self._train_lengths)
        return self._train_images[self._task_index, idx]

    def _noise(self, draw: int) -> torch.Tensor:
        """(A, T, B, z) latent noise of one of the step's draws."""
        config = self.configs[0]
        shape = (self.tasks.n_tasks, config.batch_size, config.z_dim)
        z = counter_normal(self._train_keys, self._step_counter * 3 + draw, int(np.prod(shape)))
        return z.view(-1, *shape)

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's device work, with no host synchronisation (it is what a CUDA graph captures)."""
        with step_precision(self.configs[0].precision):
            if self.mode in FEATURE_MODES:
                return self._feature_step()
            return self._parameter_step()

    def _feature_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """S in feature space: see trainables.feature.feature_step."""
        config = self.configs[0]
        g_loss, d_loss, _ = feature_step(self.G, self.D, self.opt_g, self.opt_d, self.opt_phi, self._real_batch(),
                                         self._noise(FAKE_D_DRAW), self._noise(FAKE_G_DRAW), self.lambdas,
                                         self.alpha, config.gan_loss, config.precision)
        self._step_counter += 1
        return g_loss, d_loss

    def _parameter_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """S in parameter space (soft/hard/independent layers)."""
        config = self.configs[0]
        autocast = lambda: forward_autocast(config.precision, self.device)  # noqa: E731
        l2 = self.mode == "soft" and config.pull == "l2"
        decoupled = self.mode == "soft" and config.pull == "decoupled"

        real = self._real_batch()
        with torch.no_grad(), autocast():
            fake = self.G(self._noise(FAKE_D_DRAW))
        with autocast():  # losses in float32 whatever the forward precision
            # Real and fake images through D in one pass: every layer acts per sample (no batch
            # statistics), so this is D(real) and D(fake), with half the calls.
            logits = self.D(torch.cat([real, fake], 2))[..., 0].float()
        batch = real.shape[2]
        d_loss = discriminator_loss(config.gan_loss, logits[..., :batch], logits[..., batch:])
        d_total = (self.lambdas * d_loss).sum()
        if l2:  # also at α=0, where it adds exactly nothing (a tested property)
            d_total = d_total + (self.alpha * self.D.pull_penalty()).sum()
        self.opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        self.opt_d.step()
        if decoupled:
            self.D.pull_(config.lr * self.alpha)

        with autocast():
            fake_logits = self.D(self.G(self._noise(FAKE_G_DRAW)))[..., 0].float()
        g_loss = generator_loss(config.gan_loss, fake_logits)
        g_total = (self.lambdas * g_loss).sum()
        if l2:
            g_total = g_total + (self.alpha * self.G.pull_penalty()).sum()
        self.opt_g.zero_grad(set_to_none=True)
        g_total.backward(inputs=list(self.G.parameters()))  # D's gradients here would be discarded
        self.opt_g.step()
        if decoupled:
            self.G.pull_(config.lr * self.alpha)

        if self.mode == "soft":
            self.G.update_shared()
            self.D.update_shared()
        self._step_counter += 1
        return g_loss.detach(), d_loss.detach()

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One D and one G update for every arm and task; returns (g_loss, d_loss), each (A, T)."""
        if self._graph is not None:
            self._graph.replay()
            out = self._graph_out
        elif self._capture and self._eager_before_capture == 0:
            self._capture_step()
            self._graph.replay()
            out = self._graph_out
        else:
            if self._capture:  # warm-up on a side stream, as CUDA graph capture requires
                stream = torch.cuda.Stream(self.device)
                stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(stream):
                    out = self._step()
                torch.cuda.current_stream(self.device).wait_stream(stream)
                self._eager_before_capture -= 1
            else:
                out = self._step()
        self.step += 1
        return out

    def _capture_step(self) -> None:
        self._graph = torch.cuda.CUDAGraph()
        for opt in self._optimizers():
            opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self._graph):  # records the step's kernels without running them
            self._graph_out = self._step()

    def _invalidate_graph(self) -> None:
        """Parameters or optimiser state were replaced: capture again (after a warm-up step)."""
        self._graph = None
        self._eager_before_capture = 1

    def train(self, steps: int) -> dict[int, dict[str, np.ndarray]]:
        """Run ``steps`` steps; per surviving arm id, its mean per-task losses over them.

        Losses are collected on the device and checked once at the end (no per-step host
        sync). An arm with a non-finite loss or parameter is recorded in ``diverged`` (the
        first non-finite loss names the step and task) and dropped; the others are unaffected.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not self.arm_ids:
            raise RuntimeError("every arm of this group has diverged or been dropped")
        losses = torch.empty(steps, 2, self.n_arms, self.tasks.n_tasks, device=self.device)
        first_step = self.step
        for k in range(steps):
            g, d = self.train_step()
            # In execution order (D updates first), so the first non-finite entry is the origin:
            # through shared layers a NaN spreads to every task's later losses.
            losses[k, 0] = d
            losses[k, 1] = g
        losses = losses.cpu()
        bad_params = self._non_finite_parameters()
        out, failed = {}, []
        for a, arm in enumerate(self.arm_ids):
            bad = (~torch.isfinite(losses[:, :, a])).nonzero()
            if len(bad):
                k, which, task = (int(v) for v in bad[0])
                self.diverged[arm] = DivergenceError(first_step + k + 1, self.tasks.names[task],
                                                     ("discriminator" if which == 0 else "generator") + " loss")
            elif a in bad_params:
                self.diverged[arm] = DivergenceError(self.step, *bad_params[a])
            else:
                mean = losses[:, :, a].mean(0).numpy().astype(np.float64)
                out[arm] = {"g_loss": mean[1], "d_loss": mean[0]}
                continue
            failed.append(arm)
        if failed:
            self.drop_arms(failed)
        return out

    def _non_finite_parameters(self) -> dict[int, tuple[str, str]]:
        """Arm index → (task, what) for arms with a non-finite parameter."""
        found: dict[int, tuple[str, str]] = {}
        for net_name, net in (("generator", self.G), ("discriminator", self.D)):
            for name, p, shared in net.arm_parameters():
                finite = torch.isfinite(p.detach()).flatten(2).all(2).cpu()  # (A, T or 1)
                for a, t in (~finite).nonzero().tolist():
                    found.setdefault(a, ("shared" if shared else self.tasks.names[t],
                                         f"{net_name} parameter {name}"))
        return found

    # --------------------------------------------------------------------- arms: drop, copy
    def drop_arms(self, arm_ids: Sequence[int]) -> None:
        """Stop training these arms (diverged, or stopped by a scheduler): the group shrinks."""
        keep = [a for a, arm in enumerate(self.arm_ids) if arm not in set(arm_ids)]
        if len(keep) == self.n_arms:
            return
        index = torch.tensor(keep, dtype=torch.int64, device=self.device)
        states = [_select_optimizer_state(opt.state_dict(), index) for opt in self._optimizers()]
        for net in (self.G, self.D):
            select_arms(net, index)
        self._build_optimizers(states)
        self.arm_ids = [self.arm_ids[a] for a in keep]
        self.configs = [self.configs[a] for a in keep]
        for name in ("_train_keys", "_eval_keys", "alpha", "lambdas"):
            setattr(self, name, getattr(self, name)[index])
        self._invalidate_graph()

    @torch.no_grad()
    def copy_arm(self, source: int, target: int) -> None:
        """Arm id ``target`` continues from arm id ``source``'s state (weights, S, Adam's
        moments): PBT's exploit. The target keeps its own α, λ and random streams."""
        s, t = self.arm_ids.index(source), self.arm_ids.index(target)
        for net in (self.G, self.D):
            copy_arm(net, s, t)
        for opt in self._optimizers():
            for state in opt.state.values():
                for value in state.values():
                    if value.ndim > 0:
                        value[t] = value[s]

    def set_arm(self, arm_id: int, config: GANConfig) -> None:
        """Give arm ``arm_id`` new α/λ (PBT's explore); the rest of its config must not change."""
        a = self.arm_ids.index(arm_id)
        if (config.group_key() != self.configs[a].group_key()
                or (config.seed, config.replicate) != (self.configs[a].seed, self.configs[a].replicate)):
            raise ValueError("only alpha, lambdas and mode (not hard) of an arm can change")
        if config.mode == "soft" and self.mode != "soft":
            raise ValueError("an arm can become soft only in a group with soft layers")
        self.configs[a] = config
        self.arm_configs[arm_id] = config  # what its state is now the state of (load_state_dict checks)
        self.alpha[a] = arm_alpha(config)
        self.lambdas[a] = torch.tensor(config.task_lambdas(self.tasks.n_tasks), dtype=torch.float32)

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def sample_tensor(self, k: int) -> torch.Tensor:
        """k images per arm and task on the device, (A, T, k, C, H, W) in [-1, 1], from each
        arm's fixed evaluation noise (successive evaluations compare like with like)."""
        n, z_dim = self.tasks.n_tasks, self.configs[0].z_dim
        z = counter_normal(self._eval_keys, 0, n * k * z_dim).view(-1, n, k, z_dim)
        if self.mode in FEATURE_MODES:  # conditioned on features of the task's training images
            picks = counter_uniform(self._eval_keys, 1, n * k).view(-1, n, k)
            s = draw_features(training_features(self.D, self._train_images), self._train_lengths[:, 0], picks)
            return self.G(z, s).reshape(-1, n, k, *self.image_shape)
        return self.G(z).reshape(-1, n, k, *self.image_shape)

    def sample(self, k: int) -> np.ndarray:
        """sample_tensor as float32 numpy."""
        return self.sample_tensor(k).cpu().numpy()

    def metrics(self) -> "TaskMetrics":
        """The TaskMetrics of the reference tasks, built on first use (it trains or loads a classifier)."""
        if self._metrics is None:
            from trainables.metrics import TaskMetrics
            self._metrics = TaskMetrics(self.reference_tasks(), cache_dir=self._metrics_cache_dir,
                                        device=str(self.device), trained=self.tasks)
        return self._metrics

    def evaluate(self) -> dict[int, list[dict[str, float]]]:
        """Per arm id, per-task quality of ``eval_samples`` images against the images the group
        did not train on (one classifier pass for every arm)."""
        rows = self.metrics().evaluate_arms(self.sample_tensor(self.configs[0].eval_samples))
        return dict(zip(self.arm_ids, rows))

    def reference_tasks(self) -> TaskSet:
        """The uncapped tasks that metrics are computed against (see __init__)."""
        if self._reference_tasks is None:
            config = self.configs[0]
            self._reference_tasks = self.tasks if config.samples_per_task is None else load_tasks(
                config.data, samples_per_task=None, test_fraction=config.test_fraction)
        return self._reference_tasks

    @torch.no_grad()
    def sharing_spread(self) -> np.ndarray:
        """Per arm, the mean over tasks of Σ‖θ_i − mean_j θ_j‖² over the shareable layers (0 if hard)."""
        total = torch.zeros(self.n_arms, device=self.device)
        for net in (self.G, self.D):
            for layer in net.shareable_layers():
                for p in (layer.weight, layer.bias):
                    total += ((p - p.mean(1, keepdim=True)) ** 2).flatten(1).sum(1) / self.tasks.n_tasks
        return total.cpu().numpy().astype(np.float64)

    # -------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, dicts, lists, numbers and strings (loads with weights_only=True)."""
        return {
            "configs": [c.to_dict() for c in self.configs],
            "arm_ids": list(self.arm_ids),
            "diverged": {arm: [e.step, e.task, e.what] for arm, e in self.diverged.items()},
            "step": self.step,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            **({"opt_phi": self.opt_phi.state_dict()} if self.opt_phi is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state of this group, possibly with fewer arms (dropped or diverged since)."""
        arm_ids = [int(a) for a in state["arm_ids"]]
        if (not set(arm_ids) <= set(self.arm_ids)
                or [self.arm_configs[a].to_dict() for a in arm_ids] != list(state["configs"])):
            raise ValueError("checkpoint was written for a different configuration")
        self.drop_arms([a for a in self.arm_ids if a not in arm_ids])
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self._build_optimizers([state[k] for k in ("opt_g", "opt_d", "opt_phi") if k in state])
        self.diverged = {int(arm): DivergenceError(*e) for arm, e in state["diverged"].items()}
        self.step = int(state["step"])
        self._step_counter.fill_(self.step)
        self._invalidate_graph()


def _select_optimizer_state(state: dict[str, Any], index: torch.Tensor) -> dict[str, Any]:
    """An optimiser state_dict with only the arms ``index`` of every per-parameter tensor."""
    per_param = {p: {k: (v[index] if v.ndim > 0 else v) for k, v in s.items()}
                 for p, s in state["state"].items()}
    return {"state": per_param, "param_groups": state["param_groups"]}


def arm_state(state: dict[str, Any], arm_id: int) -> dict[str, Any]:
    """One arm's state out of a group's, as ``MultiTaskGAN.state_dict()`` writes it."""
    if arm_id not in state["arm_ids"]:
        raise KeyError(f"arm {arm_id} is not in this state (it diverged or was stopped before)")
    a = list(state["arm_ids"]).index(arm_id)
    index = torch.tensor([a])
    return {"config": state["configs"][a], "step": state["step"],
            **{net: {k: v[a:a + 1] for k, v in state[net].items()} for net in ("G", "D")},
            **{opt: _select_optimizer_state(state[opt], index) for opt in ("opt_g", "opt_d")}}


class MultiTaskGAN(PopulationGAN):
    """One arm: n GANs (G_i, D_i) trained together, with optional sharing through S."""

    def __init__(self, config: GANConfig, tasks: TaskSet | None = None, device: str | torch.device = "cpu",
                 metrics_cache_dir: str | None = None, reference_tasks: TaskSet | None = None,
                 capture: bool | None = None) -> None:
        super().__init__([config], tasks, device, metrics_cache_dir, reference_tasks, capture)
        self.config = config

    def train(self, steps: int) -> dict[str, np.ndarray]:
        """Run ``steps`` steps; the mean per-task losses. Raises DivergenceError on NaN/Inf."""
        if 0 in self.diverged:
            raise self.diverged[0]
        out = super().train(steps)
        if 0 in self.diverged:
            raise self.diverged[0]
        return out[0]

    def sample(self, k: int) -> np.ndarray:
        """k images per task, float32 (n, k, C, H, W) in [-1, 1], from fixed evaluation noise."""
        return super().sample(k)[0]

    def evaluate(self) -> list[dict[str, float]]:
        """Per-task quality of ``eval_samples`` generated images against the held-out split."""
        return self.metrics().evaluate(self.sample(self.config.eval_samples))

    def sharing_spread(self) -> float:
        return float(super().sharing_spread()[0])

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["config"] = state.pop("configs")[0]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state.setdefault("configs", [state.pop("config", None)])
        state.setdefault("arm_ids", [0])
        state.setdefault("diverged", {})
        super().load_state_dict(state)
