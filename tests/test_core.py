"""The multi-task GAN core: batching, sharing modes, λ/α, checkpoints, divergence (no Ray)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from trainables.config import GANConfig
from trainables.data import load_tasks
from trainables.model import discriminator_loss, generator_loss
from trainables.train import FAKE_D_DRAW, DivergenceError, MultiTaskGAN

DATA = "digits:classes=0,1,2,3"


@pytest.fixture(scope="module")
def tasks():
    return load_tasks(DATA)


def make(tasks, **overrides) -> MultiTaskGAN:
    base = dict(data=DATA, width=32, z_dim=8, batch_size=16, eval_samples=64)
    return MultiTaskGAN(GANConfig(**{**base, **overrides}), tasks=tasks)


def params(gan: MultiTaskGAN) -> dict[str, torch.Tensor]:
    return {f"{net}.{k}": v.detach().clone()
            for net, m in (("G", gan.G), ("D", gan.D)) for k, v in m.state_dict().items()}


@pytest.mark.parametrize("mode", ["independent", "soft", "hard"])
def test_batched_forward_equals_per_task_loop(tasks, mode):
    gan = make(tasks, mode=mode)
    z = torch.randn(1, tasks.n_tasks, 5, gan.config.z_dim)
    batched = gan.G(z)
    looped = torch.stack([gan.G.forward_task(z[0, i], 0, i) for i in range(tasks.n_tasks)])[None]
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-6)
    d_batched = gan.D(batched)
    d_looped = torch.stack([gan.D.forward_task(batched[0, i], 0, i) for i in range(tasks.n_tasks)])[None]
    torch.testing.assert_close(d_batched, d_looped, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pull", ["decoupled", "l2"])
def test_soft_with_alpha_zero_is_exactly_independent(tasks, pull):
    independent, soft = make(tasks, mode="independent"), make(tasks, mode="soft", alpha=0.0, pull=pull)
    # Same start, then the same gradients at every step: the parameters stay bitwise equal.
    for gan in (independent, soft):
        gan.train(15)
    p_ind, p_soft = params(independent), params(soft)
    for name, value in p_ind.items():
        assert torch.equal(value, p_soft[name]), name
    # ...while a small α > 0 does change them.
    pulled = make(tasks, mode="soft", alpha=10.0, pull=pull)
    pulled.train(15)
    assert not all(torch.equal(v, params(pulled)[k]) for k, v in p_ind.items())


@pytest.mark.parametrize("pull, alphas", [("decoupled", (0.0, 30.0, 300.0)), ("l2", (0.0, 0.1, 10.0))])
def test_alpha_pulls_tasks_towards_shared_representation(tasks, pull, alphas):
    spreads = []
    for alpha in alphas:
        gan = make(tasks, mode="soft", alpha=alpha, pull=pull)
        gan.train(150)
        spreads.append(gan.sharing_spread())
        # S is the closed-form minimiser: the mean of the task parameters.
        layer = gan.G.layers[0]
        torch.testing.assert_close(layer.shared_weight, layer.weight.mean(1, keepdim=True))
    hard = make(tasks, mode="hard")
    hard.train(150)
    assert spreads[0] > spreads[1] > spreads[2] > hard.sharing_spread() == 0.0
    assert spreads[2] < 0.05 * spreads[0]


def test_hard_sharing_uses_one_tensor_for_all_tasks(tasks):
    gan = make(tasks, mode="hard", share_g=2, share_d=1)
    assert [layer.weight.shape[1] for layer in gan.G.layers] == [1, 1, tasks.n_tasks]
    assert [layer.weight.shape[1] for layer in gan.D.layers] == [tasks.n_tasks, tasks.n_tasks, 1]


def test_lambda_zero_freezes_that_task_in_both_networks(tasks):
    gan = make(tasks, mode="independent", lambdas=(0.0, 1.0, 1.0, 1.0))
    before = params(gan)
    gan.train(10)
    after = params(gan)
    for name in ("G.layers.2.weight", "D.layers.0.weight", "D.layers.2.weight"):
        assert torch.equal(before[name][0, 0], after[name][0, 0]), name
        assert not torch.equal(before[name][0, 1], after[name][0, 1]), name


def test_lambda_scales_each_tasks_gradient(tasks):
    grads = {}
    for lam in (1.0, 3.0):
        gan = make(tasks, mode="independent", lambdas=(lam, 1.0, 1.0, 1.0))
        real = gan._real_batch()
        fake = gan.G(gan._noise(FAKE_D_DRAW)).detach()
        d_loss = discriminator_loss("nonsaturating", gan.D(real)[..., 0], gan.D(fake)[..., 0])
        (gan.lambdas * d_loss).sum().backward()
        grads[lam] = gan.D.layers[0].weight.grad.clone()
    torch.testing.assert_close(grads[3.0][0, 0], 3 * grads[1.0][0, 0])
    torch.testing.assert_close(grads[3.0][0, 1], grads[1.0][0, 1])


def test_shared_representation_is_the_mean_in_every_soft_layer(tasks):
    gan = make(tasks, mode="soft", alpha=0.3)
    gan.train(20)
    soft_layers = gan.G.soft_layers() + gan.D.soft_layers()
    assert len(soft_layers) == gan.config.share_g + gan.config.share_d
    for layer in soft_layers:
        torch.testing.assert_close(layer.shared_weight, layer.weight.mean(1, keepdim=True))
        torch.testing.assert_close(layer.shared_bias, layer.bias.mean(1, keepdim=True))


@pytest.mark.parametrize("bad, message", [
    (dict(lambdas=(1.0, 1.0)), "2 lambda values for 4 tasks"),
    (dict(lambdas=(1.0, -1.0, 1.0, 1.0)), "finite and >= 0"),
    (dict(lambdas=(1.0, float("nan"), 1.0, 1.0)), "finite and >= 0"),
    (dict(lambdas=(0.0, 0.0, 0.0, 0.0)), "must not all be 0"),
    (dict(alpha=-0.1), "alpha must be a finite number >= 0"),
    (dict(alpha=float("inf")), "alpha must be a finite number >= 0"),
    (dict(mode="shared"), "mode must be one of"),
    (dict(gan_loss="wasserstein"), "gan_loss must be one of"),
])
def test_invalid_lambda_alpha_mode_rejected(tasks, bad, message):
    with pytest.raises(ValueError, match=message):
        make(tasks, **bad)


def test_unknown_config_key_rejected():
    with pytest.raises(ValueError, match="unknown config key.*alpah"):
        GANConfig.from_dict({"alpah": 1.0})


def test_gan_loss_values_and_gradient_directions():
    real = torch.tensor([[-2.0, 0.5, 3.0]])
    fake = torch.tensor([[-1.0, 0.0, 2.0]])
    sig = torch.sigmoid
    expected_g = {"minimax": torch.log(1 - sig(fake)).mean(), "nonsaturating": -torch.log(sig(fake)).mean(),
                  "hinge": -fake.mean()}
    for kind, value in expected_g.items():
        torch.testing.assert_close(generator_loss(kind, fake)[0], value)
    expected_d = {"nonsaturating": (-torch.log(sig(real)) - torch.log(1 - sig(fake))).mean(),
                  "hinge": (torch.relu(1 - real) + torch.relu(1 + fake)).mean()}
    expected_d["minimax"] = expected_d["nonsaturating"]
    for kind, value in expected_d.items():
        torch.testing.assert_close(discriminator_loss(kind, real, fake)[0], value)
    # G wants D(G(z)) up; D wants real logits up and fake logits down.
    for kind in ("minimax", "nonsaturating", "hinge"):
        r, f = real.clone().requires_grad_(), fake.clone().requires_grad_()
        (g_grad,) = torch.autograd.grad(generator_loss(kind, f).sum(), f)
        assert (g_grad < 0).all(), kind
        d_real, d_fake = torch.autograd.grad(discriminator_loss(kind, r, f).sum(), (r, f))
        # (hinge is flat where the margin is met, so "never the wrong way, sometimes the right way")
        assert (d_real <= 0).all() and (d_real < 0).any(), kind
        assert (d_fake >= 0).all() and (d_fake > 0).any(), kind


def test_minimax_generator_loss_saturates_nonsaturating_does_not():
    # D confidently rejects the fakes, as early in training.
    logits = torch.full((1, 8), -8.0, requires_grad=True)
    grads = {}
    for kind in ("minimax", "nonsaturating", "hinge"):
        (g,) = torch.autograd.grad(generator_loss(kind, logits).sum(), logits)
        grads[kind] = g.abs().mean().item()
    assert grads["minimax"] < 1e-3 * grads["nonsaturating"]
    assert grads["hinge"] > 1e-3


@pytest.mark.parametrize("mode, gan_loss", [("soft", "nonsaturating"), ("hard", "hinge"),
                                            ("independent", "minimax")])
def test_checkpoint_resume_reproduces_uninterrupted_run(tasks, mode, gan_loss):
    uninterrupted = make(tasks, mode=mode, gan_loss=gan_loss, alpha=50.0)
    uninterrupted.train(20)
    buffer = io.BytesIO()
    torch.save(uninterrupted.state_dict(), buffer)
    uninterrupted.train(20)

    resumed = make(tasks, mode=mode, gan_loss=gan_loss, alpha=50.0)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.step == 20
    resumed.train(20)
    assert resumed.step == uninterrupted.step == 40
    for name, value in params(uninterrupted).items():
        assert torch.equal(value, params(resumed)[name]), name
    np.testing.assert_array_equal(uninterrupted.sample(8), resumed.sample(8))


def test_checkpoint_of_other_config_rejected(tasks):
    state = make(tasks, alpha=0.5).state_dict()
    with pytest.raises(ValueError, match="different configuration"):
        make(tasks, alpha=0.6).load_state_dict(state)


@pytest.mark.parametrize("mode", ["independent", "soft", "hard"])
def test_non_finite_parameter_raises_divergence_naming_step_and_task(tasks, mode):
    gan = make(tasks, mode=mode)
    gan.train(3)
    with torch.no_grad():  # D's first layer is task 2's own in every mode
        gan.D.layers[0].weight[0, 2, 0, 0] = float("nan")
    with pytest.raises(DivergenceError) as info:
        gan.train(5)
    # Through shared layers the NaN reaches every task; the error names where it started.
    assert info.value.task == tasks.names[2]
    assert info.value.what == "discriminator loss"
    assert info.value.step == 4  # the first step after the poisoning


def test_metrics_use_the_uncapped_tasks_whatever_samples_per_task(tasks):
    capped = MultiTaskGAN(GANConfig(data=DATA, samples_per_task=10, eval_samples=50))
    assert all(len(t.train) == 10 for t in capped.tasks.tasks)
    reference = capped.reference_tasks()
    assert reference.fingerprint() == tasks.fingerprint()
    for small, full in zip(capped.tasks.tasks, reference.tasks):
        np.testing.assert_array_equal(small.test, full.test)
    assert capped.metrics().taskset is reference


def test_samples_shape_range_and_fixed_evaluation_noise(tasks):
    gan = make(tasks)
    first = gan.sample(6)
    assert first.shape == (tasks.n_tasks, 6, *tasks.image_shape)
    assert first.dtype == np.float32 and first.min() >= -1 and first.max() <= 1
    gan.train(2)
    gan2 = make(tasks)
    np.testing.assert_array_equal(first, gan2.sample(6))


def test_default_config_learns_every_digit_class():
    """The quality bar at a reduced budget: right-class samples and a collapsed FID."""
    gan = MultiTaskGAN(GANConfig())
    before = gan.evaluate()
    gan.train(1500)
    after = gan.evaluate()
    for task, b, a in zip(gan.tasks.names, before, after):
        assert a["accuracy"] >= 0.95, (task, a)
        assert a["fid"] * 20 <= b["fid"], (task, b["fid"], a["fid"])
