"""Metrics on real digits: the feature classifier, FID/KID/precision/recall sanity, the disk cache, grids."""
from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from trainables.data import TaskSet, load_tasks
from trainables.metrics import (
    FEATURE_DIM, METRIC_KEYS, TaskMetrics, copy_test_ct, frechet_distance, grid_image,
    kernel_inception_distance, mann_whitney_z, nn_ratio, precision_recall, save_grid, unseen_images,
)

FOUR_CLASSES = "digits:classes=0,1,2,3"
TEN_CLASSES = "digits:classes=0,1,2,3,4,5,6,7,8,9"


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> TaskMetrics:
    return TaskMetrics(load_tasks(FOUR_CLASSES), cache_dir=tmp_path_factory.mktemp("cache4"))


@pytest.fixture(scope="module")
def floor(four: TaskMetrics) -> list[dict[str, float]]:
    return four.real_floor()


@pytest.fixture(scope="module")
def noise_scores(four: TaskMetrics) -> list[dict[str, float]]:
    noise = np.random.default_rng(0).uniform(-1, 1, (four.taskset.n_tasks, 500, 1, 8, 8))
    return four.evaluate(noise.astype(np.float32))


@pytest.fixture(scope="module")
def swapped_scores(four: TaskMetrics) -> list[dict[str, float]]:
    """Each task is fed the real train images of the next class: real digits, wrong distribution."""
    tasks = four.taskset.tasks
    return four.evaluate([tasks[(i + 1) % len(tasks)].train for i in range(len(tasks))])


def test_classifier_reaches_95_percent_held_out_on_ten_digit_classes(tmp_path) -> None:
    metrics = TaskMetrics(load_tasks(TEN_CLASSES), cache_dir=tmp_path)
    assert metrics.trained_classifier
    assert metrics.feature_dim == FEATURE_DIM
    assert np.mean(metrics.held_out_accuracy) >= 0.95, metrics.held_out_accuracy
    assert min(metrics.held_out_accuracy) >= 0.85, metrics.held_out_accuracy


def test_result_rows_have_the_contract_keys(floor: list[dict[str, float]], four: TaskMetrics) -> None:
    assert len(floor) == four.taskset.n_tasks
    for row in floor:
        assert set(row) == set(METRIC_KEYS)
        assert all(isinstance(v, float) and np.isfinite(v) for v in row.values())
        assert row["fid"] >= 0


@pytest.fixture(scope="module")
def ten_per_task(four: TaskMetrics) -> TaskMetrics:
    """A trial's view at 10 images per task: the seed-3 subset trained, the rest the reference."""
    trained = load_tasks(FOUR_CLASSES, samples_per_task=10, subset_seed=3)
    return TaskMetrics(four.taskset, cache_dir=four.cache_path.parent, trained=trained)


def test_reference_is_every_image_the_trial_did_not_train_on(ten_per_task: TaskMetrics) -> None:
    for full, trained in zip(ten_per_task.taskset.tasks, ten_per_task.trained.tasks):
        unseen = unseen_images(full, trained)
        assert len(unseen) == len(full.test) + len(full.train) - 10
        seen = {r.tobytes() for r in trained.train}
        assert not seen & {r.tobytes() for r in unseen}


def test_nn_ratio_and_copy_test_separate_replayed_training_digits_from_held_out_ones(
        ten_per_task: TaskMetrics) -> None:
    rng = np.random.default_rng(0)
    trained = ten_per_task.trained.tasks
    # a replayer: its 10 training images, each 20 times, with slight pixel jitter
    replay = [np.clip(np.repeat(t.train, 20, 0) + rng.normal(0, 0.05, (200, 1, 8, 8)), -1, 1).astype(np.float32)
              for t in trained]
    # a non-copier: fresh real digits of the task (its held-out split)
    fresh = [t.test for t in ten_per_task.taskset.tasks]
    copied, honest = ten_per_task.evaluate(replay), ten_per_task.evaluate(fresh)
    for c, h in zip(copied, honest):
        assert c["nn_ratio"] < 0.2 and 0.75 < h["nn_ratio"] < 1.33, (c["nn_ratio"], h["nn_ratio"])
        assert c["copy_ct"] < -5 and abs(h["copy_ct"]) < 2.5, (c["copy_ct"], h["copy_ct"])
    floor = ten_per_task.real_floor()  # the training images themselves: an exact replay
    assert all(row["nn_ratio"] == 0 for row in floor)


def test_nn_ratio_and_copy_test_on_a_toy_with_known_distances() -> None:
    train = np.array([[0.0], [10.0]])
    reference = np.array([[1.0], [9.0], [2.0], [8.0]])  # nearest distances 1, 1, 2, 2: median 1.5
    fake = np.array([[0.3], [9.7], [10.3], [0.0], [10.0]])  # 0.3, 0.3, 0.3, 0, 0: median 0.3
    assert nn_ratio(fake, train, reference) == pytest.approx(0.3 / 1.5)
    # every fake distance is below every reference distance: U = 0
    z = -(5 * 4 / 2) / np.sqrt(5 * 4 * 10 / 12)
    assert mann_whitney_z(np.array([0.3, 0.3, 0.3, 0, 0]), np.array([1.0, 1, 2, 2])) == pytest.approx(z)
    assert copy_test_ct(fake, train, reference, cells=1) == pytest.approx(z)
    far = np.array([[5.0]] * 6)  # samples farther from the training set than real images: C_T > 0
    assert copy_test_ct(far, train, reference, cells=1) > 2


def test_fid_real_floor_is_far_below_noise_and_below_another_class(floor, noise_scores, swapped_scores) -> None:
    for same, noise, other in zip(floor, noise_scores, swapped_scores):
        assert same["fid"] * 20 < noise["fid"], (same, noise)
        assert same["fid"] * 5 < other["fid"], (same, other)
        assert other["fid"] < noise["fid"]


def test_kid_is_near_zero_for_same_distribution_and_positive_for_others(floor, noise_scores, swapped_scores) -> None:
    for same, noise, other in zip(floor, noise_scores, swapped_scores):
        assert other["kid"] > 0 and noise["kid"] > 0
        assert abs(same["kid"]) < 0.05 * other["kid"], (same, other)


def test_precision_recall_near_one_for_real_and_near_zero_for_noise(floor, noise_scores) -> None:
    assert np.mean([r["precision"] for r in floor]) >= 0.75, floor
    assert np.mean([r["recall"] for r in floor]) >= 0.75, floor
    for noise in noise_scores:
        assert noise["precision"] <= 0.05 and noise["recall"] <= 0.05, noise


def test_accuracy_counts_samples_assigned_to_their_own_task(floor, swapped_scores, four: TaskMetrics) -> None:
    assert all(r["accuracy"] >= 0.95 for r in floor), floor
    assert all(r["accuracy"] <= 0.05 for r in swapped_scores), swapped_scores
    # The same images given as one (n_tasks, k, ...) array score exactly as the per-task list does.
    k = min(len(t.test) for t in four.taskset.tasks)
    stacked = np.stack([t.test[:k] for t in four.taskset.tasks])
    assert four.evaluate(stacked) == four.evaluate(list(stacked))


def test_evaluate_rejects_wrong_task_count_and_image_shape(four: TaskMetrics) -> None:
    with pytest.raises(ValueError, match="tasks"):
        four.evaluate(np.zeros((3, 10, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="shape"):
        four.evaluate(np.zeros((4, 10, 1, 16, 16), np.float32))


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians() -> None:
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu_a, mu_b = np.zeros(3), np.array([1.0, 2.0, 0.0])
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = frechet_distance(mu_a, np.diag(np.sqrt(var_a)), mu_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-9)
    # A singular covariance (fewer samples than dimensions) still gives a finite, non-negative value.
    assert frechet_distance(mu_a, np.zeros((3, 3)), mu_a, np.zeros((3, 3))) == 0.0


def test_kid_is_unbiased_near_zero_for_equal_gaussians() -> None:
    rng = np.random.default_rng(1)
    same = kernel_inception_distance(rng.normal(size=(400, 16)), rng.normal(size=(400, 16)))
    shifted = kernel_inception_distance(rng.normal(size=(400, 16)), rng.normal(0.5, 1, size=(400, 16)))
    assert abs(same) < 0.05 * shifted


def test_frechet_distance_matches_scipy_sqrtm_for_non_commuting_covariances() -> None:
    # Random full covariances do not commute, so a cross term built from the diagonals (or any
    # shortcut valid only for S1 S2 = S2 S1) misses the reference by far more than the tolerance.
    rng = np.random.default_rng(7)
    d = 6
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    cov_a, cov_b = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    assert not np.allclose(cov_a @ cov_b, cov_b @ cov_a)
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    cross = scipy.linalg.sqrtm(cov_a @ cov_b)
    expected = (np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                - 2 * np.trace(cross).real)
    sqrt_a = np.real(scipy.linalg.sqrtm(cov_a))
    assert frechet_distance(mu_a, sqrt_a, mu_b, cov_b) == pytest.approx(expected, rel=1e-7)
    # The distance is symmetric in its two Gaussians.
    sqrt_b = np.real(scipy.linalg.sqrtm(cov_b))
    assert frechet_distance(mu_b, sqrt_b, mu_a, cov_a) == pytest.approx(expected, rel=1e-7)


def _unbiased_mmd2_cubic_kernel(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as plain loops over index pairs."""
    d = x.shape[1]

    def kernel(p: np.ndarray, q: np.ndarray) -> float:
        return (float(np.dot(p, q)) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kernel(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_a_brute_force_unbiased_mmd() -> None:
    rng = np.random.default_rng(3)
    # Unequal, small set sizes: a biased estimator (diagonal included) or swapped normalisers
    # differ from the unbiased value by O(1/m), far beyond the tolerance.
    ref, fake = rng.normal(size=(23, 5)), rng.normal(0.3, 1.2, size=(31, 5))
    expected = _unbiased_mmd2_cubic_kernel(ref, fake)
    assert kernel_inception_distance(ref, fake) == pytest.approx(expected, rel=1e-9)
    # Same result when the reference's off-diagonal kernel sum is supplied precomputed.
    d = ref.shape[1]
    ref_sum = sum((float(ref[i] @ ref[j]) / d + 1) ** 3
                  for i in range(len(ref)) for j in range(len(ref)) if i != j)
    assert kernel_inception_distance(ref, fake, ref_sum) == pytest.approx(expected, rel=1e-9)


def test_precision_recall_of_a_collapsed_generator_and_of_an_over_spread_one() -> None:
    rng = np.random.default_rng(5)
    real = rng.normal(size=(200, 4))
    collapsed = real[0] + 1e-3 * rng.normal(size=(200, 4))  # every sample near one real point
    precision, recall = precision_recall(real, collapsed)
    assert precision == 1.0  # all samples are realistic ...
    assert recall <= 0.02  # ... but they cover (at most) the one real point they copy
    # The reverse: a tight real set and a fake set that covers far more than it.
    precision, recall = precision_recall(collapsed, real)
    assert precision <= 0.02 and recall == 1.0
    # A fake Gaussian three times wider than the real one: most samples fall outside the real
    # manifold, yet its (large) k-NN balls cover nearly all of the real set.
    wide = rng.normal(scale=3.0, size=(200, 4))
    precision, recall = precision_recall(real, wide)
    assert precision <= 0.3 and recall >= 0.85, (precision, recall)


def test_precision_recall_use_the_kth_nearest_neighbour_radius_on_a_1d_toy() -> None:
    # k = 3 with 4 points per set: each radius is the distance to the farthest other point.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # radii 3, 2, 2, 3: balls [-3,3] [-1,3] [0,4] [0,6]
    fake = np.array([[4.4], [6.2], [7.0], [8.0]])  # radii 3.6, 1.8, 2.6, 3.6: only 4.4's ball
    #                                                 [0.8, 8.0] reaches real points (1, 2, 3)
    # precision: only 4.4 lies in a real ball (3's, [0,6]; 6.2 misses it by 0.2) -> 1/4.
    # recall: real 1, 2, 3 lie in 4.4's ball -> 3/4. With the (k-1)-th neighbour instead,
    # 4.4's radius would be 2.6 (ball [1.8, 7.0]) and recall 2/4.
    assert precision_recall(real, fake, k=3) == (0.25, 0.75)
    # Roles exchanged: precision now uses the fake set's balls (the ref argument's radii).
    assert precision_recall(fake, real, k=3) == (0.75, 0.25)
    # k = 1: nearest-neighbour radii 1, 1, 1, 1 (real) and 1.8, 0.8, 0.8, 1.0 (fake):
    # no fake point within 1 of a real one; real 3 within 1.8 of 4.4 -> recall 1/4.
    assert precision_recall(real, fake, k=1) == (0.0, 0.25)


def test_cache_is_reused_and_keyed_by_the_data(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MTGAN_CACHE", str(tmp_path))  # cache_dir=None falls back to $MTGAN_CACHE
    first = TaskMetrics(load_tasks(FOUR_CLASSES))
    assert first.trained_classifier and first.cache_path.parent == tmp_path
    mtime = os.stat(first.cache_path).st_mtime_ns
    second = TaskMetrics(load_tasks(FOUR_CLASSES))
    assert not second.trained_classifier
    assert os.stat(second.cache_path).st_mtime_ns == mtime
    assert second.cache_path == first.cache_path

    smaller = TaskMetrics(load_tasks(FOUR_CLASSES, samples_per_task=60))
    assert smaller.trained_classifier and smaller.cache_path != first.cache_path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.cache_path.name, smaller.cache_path.name])  # no temporary files left behind


def test_corrupt_cache_file_is_retrained_to_the_same_classifier(tmp_path) -> None:
    taskset: TaskSet = load_tasks(FOUR_CLASSES)
    original = TaskMetrics(taskset, cache_dir=tmp_path)
    before = original.real_floor()
    original.cache_path.write_bytes(b"not a torch file")
    recovered = TaskMetrics(taskset, cache_dir=tmp_path)
    assert recovered.trained_classifier
    # Training is deterministic, so the retrained classifier scores exactly as the first one did.
    assert recovered.real_floor() == before
    assert not TaskMetrics(taskset, cache_dir=tmp_path).trained_classifier


def test_save_grid_writes_an_upscaled_png_with_one_row_per_task(tmp_path) -> None:
    images = np.full((4, 6, 1, 8, 8), -1.0, np.float32)
    images[2, 3] = 1.0  # one white cell: row 2, column 3
    path = save_grid(images, tmp_path / "grid.png")
    with Image.open(path) as png:
        assert png.format == "PNG"
        # 8x8 digits upscaled 6x to 48px cells, 2px padding: 2 + 6*50 wide, 2 + 4*50 high.
        assert png.size == (302, 202)
        pixels = np.asarray(png.convert("L"))
    assert pixels[2 + 2 * 50 + 24, 2 + 3 * 50 + 24] == 255
    assert pixels[2 + 2 * 50 + 24, 2 + 2 * 50 + 24] == 0

    labelled = grid_image(images, names=["zero", "one", "two", "three"])
    assert labelled.size[1] == 202 and labelled.size[0] > 302

    rgb = grid_image(np.zeros((2, 3, 3, 32, 32), np.float32))
    assert rgb.size == (2 + 3 * (64 + 2), 2 + 2 * (64 + 2))
