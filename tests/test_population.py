"""Arms in one batched model: independence from neighbours, random streams, divergence,
checkpoints, the decoupled pull and CUDA-graph steps (no Ray)."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from trainables.config import GANConfig
from trainables.data import load_tasks
from trainables.optim import ArmwiseAdam
from trainables.train import (EVAL_STREAM, INIT_STREAM, TRAIN_STREAM, PopulationGAN, counter_normal,
                              counter_uniform, stream_keys, uniform_pick)

DATA = "digits:classes=0,1,2,3"
SMALL = dict(data=DATA, width=16, z_dim=8, batch_size=8, eval_samples=16)


@pytest.fixture(scope="module")
def tasks():
    return load_tasks(DATA)


def arm(**overrides) -> GANConfig:
    return GANConfig(**{**SMALL, **overrides})


def arm_params(pop: PopulationGAN, arm_id: int) -> dict[str, torch.Tensor]:
    """One arm's slice of every parameter and buffer (weights and S)."""
    a = pop.arm_ids.index(arm_id)
    return {f"{net}.{k}": v[a].detach().clone()
            for net, m in (("G", pop.G), ("D", pop.D)) for k, v in m.state_dict().items()}


def assert_arm_equal(pop, arm_id, other, other_arm_id, rtol=0.0):
    mine, theirs = arm_params(pop, arm_id), arm_params(other, other_arm_id)
    assert {k for k in mine if "shared" not in k} == {k for k in theirs if "shared" not in k}
    for name, value in mine.items():
        if name not in theirs:  # S of an independent arm (α = 0) in a soft group
            continue
        if rtol == 0.0:
            assert torch.equal(value, theirs[name]), name
        else:
            torch.testing.assert_close(value, theirs[name], rtol=rtol, atol=0.0)


# Every groupable mix: soft arms with independent ones (both pulls), hard arms.
GROUPS = {
    "soft+independent, decoupled": [
        arm(mode="soft", alpha=50.0, seed=0), arm(mode="independent", seed=1),
        arm(mode="soft", alpha=200.0, seed=2, lambdas=(0.5, 1.0, 1.5, 1.0))],
    "soft+independent, l2": [
        arm(mode="soft", alpha=0.5, seed=3, pull="l2"),
        arm(mode="independent", seed=4, pull="l2", lambdas=(1.0, 0.0, 2.0, 1.0))],
    "hard": [arm(mode="hard", seed=6), arm(mode="hard", seed=7, lambdas=(1.0, 3.0, 0.0, 1.0))],
}


@pytest.mark.parametrize("group", GROUPS, ids=list(GROUPS))
def test_an_arm_in_a_mixed_group_ends_where_it_ends_alone(tasks, group):
    configs = GROUPS[group]
    together = PopulationGAN(configs, tasks=tasks)
    together.train(200)
    for arm_id, config in enumerate(configs):
        alone = PopulationGAN([config], tasks=tasks)
        alone.train(200)
        assert_arm_equal(together, arm_id, alone, 0)
        np.testing.assert_array_equal(together.sample(4)[arm_id], alone.sample(4)[0])


def test_armwise_adam_is_torchs_adam_with_interchangeable_state():
    """The CPU optimiser (fused kernel per arm) takes Adam's steps, and its state loads into
    torch.optim.Adam and back (checkpoints do not depend on which one wrote them)."""
    def run(cls, steps=25):
        generator = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(3, 4, 5, 7, generator=generator)),
                  torch.nn.Parameter(torch.randn(3, 4, 1, 1, generator=generator))]
        opt = cls(params, lr=1e-2, betas=(0.5, 0.999))
        for _ in range(steps):
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator)
            opt.step()
        return params, opt

    ours, opt = run(ArmwiseAdam)
    theirs, reference = run(torch.optim.Adam)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.optim.Adam(theirs, lr=1e-2, betas=(0.5, 0.999)).load_state_dict(opt.state_dict())
    ArmwiseAdam(ours, lr=1e-2, betas=(0.5, 0.999)).load_state_dict(reference.state_dict())
    assert float(opt.state_dict()["state"][0]["step"]) == 25


def test_arms_that_cannot_share_a_model_are_refused(tasks):
    with pytest.raises(ValueError, match="differ only in"):
        PopulationGAN([arm(mode="soft"), arm(mode="hard")], tasks=tasks)
    with pytest.raises(ValueError, match="differ only in"):
        PopulationGAN([arm(width=16), arm(width=32)], tasks=tasks)
    with pytest.raises(ValueError, match="differ only in"):
        PopulationGAN([arm(pull="l2"), arm(pull="decoupled")], tasks=tasks)


def test_no_two_random_streams_of_seeds_0_to_99_coincide():
    keys = np.concatenate([stream_keys(seed) for seed in range(100)])  # (300, 2)
    assert len({tuple(k) for k in keys}) == len(keys)
    # ... and their draws differ from the very first numbers (seed k's training stream is
    # not seed k+1's initialisation stream, as it once was).
    draws = counter_uniform(torch.tensor(keys, dtype=torch.int64), 0, 32).numpy()
    assert len({row.tobytes() for row in draws}) == len(draws)
    assert len(np.unique(draws)) > 0.99 * draws.size
    # The stream of one seed is fixed: what the checkpoints and the arm-vs-alone test rely on.
    np.testing.assert_array_equal(stream_keys(7), stream_keys(7))
    assert {INIT_STREAM, TRAIN_STREAM, EVAL_STREAM} == {0, 1, 2}


def test_counter_draws_are_uniform_and_normal():
    keys = torch.tensor(np.stack([stream_keys(s)[TRAIN_STREAM] for s in range(4)]), dtype=torch.int64)
    u = counter_uniform(keys, 5, 50_000)
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.002
    z = counter_normal(keys, 5, 50_001)
    assert z.shape == (4, 50_001)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert abs(float((z.abs() < 1.96).float().mean()) - 0.95) < 0.005
    # successive counters give fresh numbers
    assert not torch.equal(counter_uniform(keys, 6, 8), counter_uniform(keys, 5, 8))


def test_uniform_draws_stay_below_one_and_picks_inside_each_task():
    """A draw of 1.0 (the top 24-bit value rounds up in float32) once indexed past a task's
    images on a GPU, 2**-24 of the time: over 2**25 draws the top value comes up about twice."""
    key = torch.tensor(stream_keys(3)[TRAIN_STREAM][None], dtype=torch.int64)
    u = counter_uniform(key, 0, 1 << 25)
    assert float(u.max()) < 1.0 and float(u.max()) > 1 - 2 ** -23
    lengths = torch.tensor([[16.0], [10.0], [50.0]])  # 16: u just below 1 times 16 rounds to 16
    top = torch.full((3, 4), float(u.max()))
    np.testing.assert_array_equal(uniform_pick(top, lengths).numpy(), [[15] * 4, [9] * 4, [49] * 4])
    np.testing.assert_array_equal(uniform_pick(torch.full((3, 1), 0.5), lengths).numpy(), [[8], [5], [25]])


def test_a_diverged_arm_is_dropped_and_the_others_are_unchanged(tasks):
    configs = [arm(mode="soft", alpha=50.0, seed=0), arm(mode="soft", alpha=20.0, seed=1),
               arm(mode="independent", seed=2)]
    reference, poisoned = PopulationGAN(configs, tasks=tasks), PopulationGAN(configs, tasks=tasks)
    for pop in (reference, poisoned):
        pop.train(10)
    with torch.no_grad():  # arm 1, task 2's own first discriminator layer
        poisoned.D.layers[0].weight[1, 2, 0, 0] = float("nan")
    out = poisoned.train(10)
    reference.train(10)
    assert sorted(out) == [0, 2] and poisoned.arm_ids == [0, 2]
    error = poisoned.diverged[1]
    assert (error.step, error.task, error.what) == (11, tasks.names[2], "discriminator loss")
    for arm_id in (0, 2):
        assert_arm_equal(poisoned, arm_id, reference, arm_id)
    # The group goes on with the survivors, still unchanged.
    poisoned.train(5)
    reference.train(5)
    for arm_id in (0, 2):
        assert_arm_equal(poisoned, arm_id, reference, arm_id)
    assert set(poisoned.evaluate()) == {0, 2}


def test_group_checkpoint_resumes_bit_for_bit_and_loads_weights_only(tasks):
    configs = [arm(mode="soft", alpha=30.0, seed=0), arm(mode="independent", seed=0),
               arm(mode="soft", alpha=100.0, seed=1, lambdas=(1.0, 2.0, 1.0, 0.5))]
    uninterrupted = PopulationGAN(configs, tasks=tasks)
    uninterrupted.train(15)
    uninterrupted.drop_arms([1])  # e.g. a scheduler stopped it
    uninterrupted.train(5)
    buffer = io.BytesIO()
    torch.save(uninterrupted.state_dict(), buffer)
    uninterrupted.train(20)

    resumed = PopulationGAN(configs, tasks=tasks)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.step == 20 and resumed.arm_ids == [0, 2]
    resumed.train(20)
    for arm_id in (0, 2):
        assert_arm_equal(resumed, arm_id, uninterrupted, arm_id)
    np.testing.assert_array_equal(resumed.sample(4), uninterrupted.sample(4))
    other = PopulationGAN([configs[0], configs[2], configs[1]], tasks=tasks)
    with pytest.raises(ValueError, match="different configuration"):
        other.load_state_dict(resumed.state_dict())


def test_copy_arm_continues_the_source_state_with_the_targets_own_alpha(tasks):
    configs = [arm(mode="soft", alpha=50.0, seed=0), arm(mode="soft", alpha=0.0, seed=1)]
    pop = PopulationGAN(configs, tasks=tasks)
    pop.train(5)
    pop.copy_arm(0, 1)
    assert_arm_equal(pop, 1, pop, 0)
    pop.set_arm(1, dataclasses.replace(configs[1], alpha=500.0))
    pop.train(3)
    spread = pop.sharing_spread()
    assert spread[1] < spread[0]  # the stronger pull now acts on the copied weights


def test_decoupled_pull_contracts_the_spread_by_the_closed_form(tasks):
    """One step of a soft arm is the same step of an independent arm (same seed) followed by
    θ_i ← θ_i − lr·α·(θ_i − S) in every soft discriminator layer (the D update comes first, so
    it is the same there): the spread around S shrinks by exactly (1 − lr·α)²."""
    lr = 1e-3
    pop = PopulationGAN([arm(mode="soft", alpha=200.0, lr=lr), arm(mode="soft", alpha=0.0, lr=lr)], tasks=tasks)
    start = [(layer.shared_weight.clone(), layer.weight.clone()) for layer in pop.D.soft_layers()]
    pop.train(1)
    rate = lr * 200.0
    for (shared, _), layer in zip(start, pop.D.soft_layers()):
        pulled, free = layer.weight[0], layer.weight[1]
        torch.testing.assert_close(pulled, free.lerp(shared[1], rate), rtol=1e-6, atol=1e-7)
        spread = lambda w: float(((w.detach() - shared[0]) ** 2).sum())  # noqa: E731  (S: the arm's start)
        assert spread(pulled) == pytest.approx((1 - rate) ** 2 * spread(free), rel=1e-5)
    # Over many steps the spread falls with α; at lr·α = 1 the tasks are tied after every step.
    spreads = []
    for alpha in (0.0, 30.0, 300.0, 1 / lr):
        pop = PopulationGAN([arm(mode="soft", alpha=alpha, lr=lr)], tasks=tasks)
        pop.train(100)
        spreads.append(float(pop.sharing_spread()[0]))
    assert spreads[0] > spreads[1] > spreads[2] > spreads[3]
    assert spreads[3] < 1e-10 * spreads[0]


def test_l2_pull_is_alpha_times_the_squared_distance_in_the_loss(tasks):
    pop = PopulationGAN([arm(mode="soft", alpha=0.7, pull="l2"), arm(mode="soft", alpha=0.0, pull="l2")],
                        tasks=tasks)
    pop.train(3)
    layer = pop.G.soft_layers()[0]
    expected = ((layer.weight - layer.shared_weight) ** 2).sum((1, 2, 3)) + \
        ((layer.bias - layer.shared_bias) ** 2).sum((1, 2, 3))
    torch.testing.assert_close(layer.pull_penalty(), expected)
    (grad,) = torch.autograd.grad((pop.alpha * pop.G.pull_penalty()).sum(), layer.weight)
    torch.testing.assert_close(grad[0], 2 * 0.7 * (layer.weight[0] - layer.shared_weight[0]))
    assert torch.equal(grad[1], torch.zeros_like(grad[1]))


def test_unknown_pull_is_refused():
    with pytest.raises(ValueError, match="pull must be one of"):
        GANConfig(pull="sgd")


def test_batched_evaluation_equals_evaluating_each_arm(tasks):
    configs = [arm(mode="soft", alpha=50.0, seed=0), arm(mode="independent", seed=1)]
    pop = PopulationGAN(configs, tasks=tasks)
    pop.train(5)
    batched = pop.evaluate()
    samples = pop.sample(configs[0].eval_samples)
    for a, arm_id in enumerate(pop.arm_ids):
        one = pop.metrics().evaluate(samples[a])
        for got, want in zip(batched[arm_id], one):
            assert got == pytest.approx(want, rel=1e-6, abs=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_step_equals_eager_step(tasks):
    configs = [arm(mode="soft", alpha=50.0, seed=s) for s in range(3)] + [arm(mode="independent", seed=3)]
    graph = PopulationGAN(configs, tasks=tasks, device="cuda", capture=True)
    eager = PopulationGAN(configs, tasks=tasks, device="cuda", capture=False)
    for pop in (graph, eager):
        pop.train(30)
        pop.drop_arms([1])
        pop.train(30)
    assert graph._graph is not None
    for arm_id in graph.arm_ids:
        assert_arm_equal(graph, arm_id, eager, arm_id)
