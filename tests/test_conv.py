"""The convolutional population (trainables.conv): grouped convolutions equal the per-(arm, task)
loop, sharing keeps one kernel per arm (hard) or pulls towards each arm's mean (soft)."""
from __future__ import annotations

import pytest
import torch

from trainables.conv import ConvEncoder, ConvGenerator, PopConv, build_conv_networks, conv_geometry


def _generators(arms: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + a) for a in range(arms)]


def _perturb(net: torch.nn.Module, seed: int) -> None:
    """Make every (arm, task) different, as training would, so a mixed-up index shows."""
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=rng) * 0.02)


@pytest.mark.parametrize("size,channels_in,mode", [
    (16, 1, "independent"), (16, 1, "soft"), (16, 1, "hard"), (28, 1, "soft"), (32, 3, "hard")])
def test_batched_equals_per_arm_task_loop(size: int, channels_in: int, mode: str) -> None:
    arms, tasks, batch, z_dim = 2, 3, 5, 8
    shape = (channels_in, size, size)
    g, d = build_conv_networks(tasks, shape, 8, z_dim, mode, 2, 2, _generators(arms))
    _perturb(g, 1)
    _perturb(d, 2)
    z = torch.randn(arms, tasks, batch, z_dim)
    images = g(z)
    logits = d(images)
    assert images.shape == (arms, tasks, batch, channels_in * size * size)
    assert logits.shape == (arms, tasks, batch, 1)
    assert images.abs().max() <= 1
    for a in range(arms):
        for t in range(tasks):
            ref = g.forward_task(z[a, t], a, t)
            torch.testing.assert_close(images[a, t], ref, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(logits[a, t], d.forward_task(ref, a, t), rtol=1e-4, atol=1e-5)


def test_arms_are_independent_of_their_neighbours() -> None:
    """Arm 1's output does not depend on what arm 0 holds or receives."""
    g, _ = build_conv_networks(2, (1, 16, 16), 8, 4, "soft", 2, 2, _generators(2))
    z = torch.randn(2, 2, 3, 4)
    before = g(z)[1]
    with torch.no_grad():
        for p in g.parameters():
            p[0].mul_(3.0)
    z2 = z.clone()
    z2[0] = 100.0
    torch.testing.assert_close(g(z2)[1], before)


def test_each_arm_starts_from_its_own_seed_and_tasks_from_one_draw() -> None:
    alone, _ = build_conv_networks(3, (1, 16, 16), 8, 4, "independent", 0, 0, _generators(1, seed=7))
    pair, _ = build_conv_networks(3, (1, 16, 16), 8, 4, "independent", 0, 0,
                                  _generators(1, seed=5) + _generators(1, seed=7))
    for p_alone, p_pair in zip(alone.parameters(), pair.parameters()):
        torch.testing.assert_close(p_pair[1], p_alone[0])
        torch.testing.assert_close(p_alone[0, 1], p_alone[0, 0])  # tasks start equal


def test_hard_keeps_one_kernel_per_arm_for_the_shared_blocks_only() -> None:
    arms, tasks = 2, 4
    g, d = build_conv_networks(tasks, (1, 32, 32), 8, 4, "hard", 2, 1, _generators(arms))
    assert [layer.sharing for layer in g.layers] == ["hard", "hard", "independent", "independent"]
    assert [layer.sharing for layer in d.layers] == ["independent"] * 3 + ["hard"]
    assert g.layers[0].weight.shape[:2] == (arms, 1)
    assert g.layers[2].weight.shape[:2] == (arms, tasks)
    assert d.layers[-1].weight.shape[:2] == (arms, 1)
    assert [name for name, _, shared in g.arm_parameters() if shared] == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    # The one kernel is used by every task: its gradient is the sum of the tasks' gradients.
    z = torch.randn(arms, tasks, 3, 4)
    g(z).sum().backward()
    batched = g.layers[0].weight.grad[0, 0].clone()
    g.zero_grad()
    sum(g.forward_task(z[0, t], 0, t).sum() for t in range(tasks)).backward()
    torch.testing.assert_close(batched, g.layers[0].weight.grad[0, 0], rtol=1e-4, atol=1e-5)


def test_soft_pull_and_shared_update_act_per_arm() -> None:
    layer = PopConv(3, 2, 4, 3, 1, 1, "soft", _generators(2))
    _perturb(layer, 3)
    layer.update_shared()
    torch.testing.assert_close(layer.shared_weight, layer.weight.mean(1, keepdim=True))
    spread = layer.pull_penalty()
    assert spread.shape == (2,) and bool((spread > 0).all())
    expected = ((layer.weight - layer.shared_weight) ** 2).sum((1, 2, 3, 4, 5)) + (
        (layer.bias - layer.shared_bias) ** 2).sum((1, 2))
    torch.testing.assert_close(spread, expected)
    layer.pull_(torch.tensor([0.0, 0.5]))
    after = layer.pull_penalty()
    torch.testing.assert_close(after[0], spread[0])  # rate 0: arm 0 untouched
    torch.testing.assert_close(after[1], spread[1] * 0.25)  # halfway: a quarter of the squared distance
    layer.pull_(torch.tensor([1.0, 1.0]))
    assert float(layer.pull_penalty().detach().abs().max()) < 1e-10


def test_independent_layers_have_no_shared_state_and_no_pull() -> None:
    g = ConvGenerator(2, 4, (1, 16, 16), 8, 0, "soft", _generators(1))
    assert g.soft_layers() == [] and g.shareable_layers() == []
    assert not list(g.buffers())
    d = ConvEncoder(2, (1, 16, 16), 8, 1, 3, "soft", _generators(1))
    assert len(d.soft_layers()) == 3 and d.pull_penalty().shape == (1,)


@pytest.mark.parametrize("size,expected", [(8, (4, 1)), (16, (4, 2)), (28, (7, 2)), (32, (4, 3)), (64, (4, 4))])
def test_geometry(size: int, expected: tuple[int, int]) -> None:
    assert conv_geometry(size) == expected


@pytest.mark.parametrize("size", [4, 18, 30, 256])
def test_geometry_refuses_sides_it_cannot_build(size: int) -> None:
    with pytest.raises(ValueError, match="conv arch"):
        conv_geometry(size)
