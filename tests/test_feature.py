"""The feature-space reading of S (trainables.feature): batched equals the per-(arm, task) loop,
the encoder is one per arm (feature) or per task (feature_private), the pull trains G only and
"update S" trains φ on the λ-weighted discriminator losses."""
from __future__ import annotations

import copy

import pytest
import torch

from trainables.feature import (build_feature_networks, draw_features, feature_step, real_features,
                                training_features, unit)

SHAPE = (1, 16, 16)
Z_DIM, FEATURES = 4, 8


def _nets(mode: str, arms: int = 2, tasks: int = 3):
    generators = [torch.Generator().manual_seed(10 + a) for a in range(arms)]
    return build_feature_networks(tasks, SHAPE, 8, Z_DIM, mode, generators, feature_dim=FEATURES)


def _optimizers(g, d):
    adam = lambda params: torch.optim.Adam(params, lr=1e-2, betas=(0.5, 0.999))  # noqa: E731
    return adam(g.parameters()), adam(d.head_parameters()), adam(d.encoder_parameters())


def _perturb(net: torch.nn.Module, seed: int) -> None:
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=rng) * 0.02)


@pytest.mark.parametrize("mode", ["feature", "feature_private"])
def test_batched_equals_per_arm_task_loop(mode: str) -> None:
    g, d = _nets(mode)
    _perturb(g, 1)
    _perturb(d, 2)
    z = torch.randn(2, 3, 5, Z_DIM)
    s = unit(torch.randn(2, 3, 5, FEATURES))
    images = g(z, s)
    logits = d(images, s)
    assert logits.shape == (2, 3, 5, 1)
    for a in range(2):
        for t in range(3):
            ref = g.forward_task(z[a, t], s[a, t], a, t)
            torch.testing.assert_close(images[a, t], ref, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(logits[a, t], d.forward_task(ref, s[a, t], a, t), rtol=1e-4, atol=1e-4)


def test_feature_has_one_encoder_per_arm_private_one_per_task() -> None:
    _, shared = _nets("feature")
    _, private = _nets("feature_private")
    assert {p.shape[:2] for p in shared.encoder_parameters()} == {(2, 1)}
    assert {p.shape[:2] for p in private.encoder_parameters()} == {(2, 3)}
    # Shared: the same image gets the same feature in every task of an arm.
    x = torch.randn(1, 1, 4, 256).expand(2, 3, 4, 256)
    h = shared.encode(x)
    torch.testing.assert_close(h[:, 1], h[:, 0])
    assert not torch.allclose(h[0], h[1])  # arms have their own φ


def _step(g, d, opts, alpha: float, lambdas: torch.Tensor, seed: int = 0, precision: str = "fp32"):
    rng = torch.Generator().manual_seed(seed)
    real = torch.rand(2, 3, 6, 256, generator=rng) * 2 - 1
    z_d, z_g = (torch.randn(2, 3, 6, Z_DIM, generator=rng) for _ in range(2))
    return feature_step(g, d, *opts, real, z_d, z_g, lambdas, torch.full((2,), alpha), "nonsaturating",
                        precision)


def test_pull_trains_the_generator_only_and_phi_follows_the_weighted_discriminator_losses() -> None:
    g, d = _nets("feature_private")
    runs = {}
    lambdas = torch.ones(2, 3)
    lambdas[:, 1] = 0.0  # task 1's discriminator loss has no weight
    for alpha in (0.0, 10.0):
        g_a, d_a = copy.deepcopy(g), copy.deepcopy(d)
        g_loss, d_loss, pull = _step(g_a, d_a, _optimizers(g_a, d_a), alpha, lambdas)
        assert g_loss.shape == d_loss.shape == pull.shape == (2, 3)
        assert bool(((pull >= 0) & (pull <= 4)).all())
        runs[alpha] = (g_a, d_a)
    # φ (and the heads) do not see α: the pull's gradient reaches G only.
    for p0, p1 in zip(runs[0.0][1].parameters(), runs[10.0][1].parameters()):
        torch.testing.assert_close(p0, p1)
    assert any(not torch.allclose(p0, p1) for p0, p1 in zip(runs[0.0][0].parameters(), runs[10.0][0].parameters()))
    # Update S: φ moved for the weighted tasks, not for the task whose λ is 0 (private encoders).
    d_after = runs[0.0][1]
    for p_before, p_after in zip(d.encoder_parameters(), d_after.encoder_parameters()):
        torch.testing.assert_close(p_after[:, 1], p_before[:, 1])
        assert not torch.allclose(p_after[:, 0], p_before[:, 0])


def test_update_s_recomputes_features_from_the_new_phi() -> None:
    g, d = _nets("feature")
    real = torch.rand(2, 3, 6, 256) * 2 - 1
    before = real_features(d, real)
    assert not before.requires_grad
    torch.testing.assert_close(before.norm(dim=-1), torch.ones(2, 3, 6))
    _step(g, d, _optimizers(g, d), 1.0, torch.ones(2, 3))
    assert not torch.allclose(real_features(d, real), before)


def test_the_pull_brings_re_encoded_samples_towards_their_feature() -> None:
    """With a large α and φ held still, a few generator steps shrink E‖ŝ(G(z, s)) − s‖²."""
    torch.manual_seed(0)
    g, d = _nets("feature")
    opts = _optimizers(g, d)
    for opt in opts[1:]:
        for group in opt.param_groups:
            group["lr"] = 0.0
    lambdas = torch.full((2, 3), 1e-6)  # the GAN term negligible: the pull alone
    first = _step(g, d, opts, 1.0, lambdas)[2]
    for _ in range(10):
        last = _step(g, d, opts, 1.0, lambdas, seed=0)[2]
    assert float(last.mean()) < 0.5 * float(first.mean())


def test_evaluation_features_come_from_each_tasks_training_images() -> None:
    _, d = _nets("feature_private")
    images = torch.rand(3, 7, 256) * 2 - 1
    lengths = torch.tensor([7, 2, 5])
    feats = training_features(d, images, chunk=3)
    assert feats.shape == (2, 3, 7, FEATURES)
    torch.testing.assert_close(feats, unit(d.encode(images[None].expand(2, -1, -1, -1))))
    drawn = draw_features(feats, lengths, torch.rand(2, 3, 50))
    for a in range(2):
        for t in range(3):
            allowed = feats[a, t, : int(lengths[t])]
            distances = (drawn[a, t, :, None] - allowed[None]).norm(dim=-1).min(1).values
            assert float(distances.max()) < 1e-6


def test_bf16_step_stays_close_to_fp32() -> None:
    """bf16 autocast on the CPU: float32 losses within bfloat16's rounding of the fp32 step's."""
    results = {}
    for precision in ("fp32", "bf16"):
        g, d = _nets("feature")
        results[precision] = _step(g, d, _optimizers(g, d), 1.0, torch.ones(2, 3), precision=precision)
        assert all(x.dtype == torch.float32 and bool(torch.isfinite(x).all()) for x in results[precision])
    for full, low in zip(results["fp32"], results["bf16"]):
        torch.testing.assert_close(low, full, rtol=0.05, atol=0.05)
