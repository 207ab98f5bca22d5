"""Per-task sample-quality metrics in the feature space of a small classifier trained on the real data.

No Inception weights exist offline, and Inception features would be meaningless for 8x8 digits anyway,
so FID/KID/precision/recall are computed in the penultimate layer of a small conv net trained on the
real *train* images of all tasks of a TaskSet. The classifier's target is the task index or, when
every task carries labels, the (task, label) pair (e.g. domain x digit: richer features). The net is
trained once per TaskSet (deterministically) and cached on disk, keyed by TaskSet.fingerprint() and
the recipe version, so the many Ray trials of one sweep share it.

Reference set of every metric = every image of the task that the generator did not train on: the
task's held-out (test) split plus, when the trial trained on a capped subset, the rest of its train
pool (the classifier may have seen those; the GAN has not).

Copying is measured in pixel space (flattened images on the [-1, 1] scale, Euclidean distance):
``nn_ratio`` = median distance from generated samples to their nearest training image ÷ median
distance from the reference images to their nearest training image (≈ 1 for a generator that does
not copy, → 0 for one that replays its training set), and ``copy_ct`` = Meehan et al. 2020's C_T
(a Mann–Whitney z of the same two distance samples, per k-means cell of the training set, weighted
by the reference's share of each cell; ≪ 0 means the samples sit closer to the training images
than fresh real images do).
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from trainables.data import Task, TaskSet

# Bump whenever the architecture, the training recipe or the feature normalisation changes:
# it is part of the cache key, so stale classifiers are never reused.
CLASSIFIER_VERSION = "featclf-v1"
FEATURE_DIM = 32  # small so covariances are estimable from a few dozen held-out images per task
TRAIN_STEPS = 300
BATCH_SIZE = 128
LEARNING_RATE = 3e-3
TRAIN_SEED = 0
PR_NEIGHBOURS = 3  # k of the k-NN manifolds (Kynkaenniemi et al. 2019)
METRIC_KEYS = ("fid", "kid", "precision", "recall", "accuracy", "nn_ratio", "copy_ct")
# C_T cells: about one k-means cell of the training set per CT_REFERENCE_PER_CELL reference images
# (a Mann-Whitney z needs a few points on each side), at most CT_MAX_CELLS; a cell counts only with
# at least CT_MIN_SAMPLES generated samples in it (Meehan et al.'s tau: cells the generator leaves
# empty say nothing about copying).
CT_REFERENCE_PER_CELL, CT_MAX_CELLS, CT_MIN_SAMPLES = 20, 5, 5

Images = np.ndarray | torch.Tensor


class FeatureClassifier(nn.Module):
    """conv -> pool to 8x8 -> strided conv -> 4x4 -> FEATURE_DIM bottleneck -> linear head.

    Images of 16x16 and up enter with a strided first conv and everything is pooled to 8x8 before
    the second conv, so evaluation costs about the same for 8x8 and 64x64 images (evaluate() runs at
    every training iteration). The feature is the bottleneck *before* its ReLU: no dead
    (constant-zero) dimensions, so the feature covariances stay full rank.
    """

    def __init__(self, channels: int, n_classes: int, image_size: int,
                 feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        first_stride = 2 if image_size >= 16 else 1
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=first_stride, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(8),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 16, feature_dim),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, n_classes))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


@dataclass
class _ClassifierBundle:
    model: FeatureClassifier
    class_to_task: torch.Tensor  # int64 (n_classes,)
    feature_mean: torch.Tensor  # (FEATURE_DIM,) of the real train features: features are standardised
    feature_std: torch.Tensor


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The argument, else $MTGAN_CACHE, else ~/.cache/mtgan."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("MTGAN_CACHE"):
        return Path(os.environ["MTGAN_CACHE"])
    return Path.home() / ".cache" / "mtgan"


def classifier_cache_path(taskset: TaskSet, cache_dir: str | os.PathLike | None = None) -> Path:
    key = hashlib.sha256(f"{CLASSIFIER_VERSION}|{taskset.fingerprint()}".encode()).hexdigest()[:24]
    return default_cache_dir(cache_dir) / f"{CLASSIFIER_VERSION}-{key}.pt"


def _class_targets(taskset: TaskSet) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-task int64 class ids of the train images, and class -> task index.

    With labels on every task the classes are the distinct (task, label) pairs; otherwise the tasks.
    """
    tasks = taskset.tasks
    if all(t.train_labels is not None for t in tasks):
        targets, class_to_task, offset = [], [], 0
        for i, t in enumerate(tasks):
            labels = np.asarray(t.train_labels)
            uniq, inverse = np.unique(labels, return_inverse=True)
            targets.append((inverse + offset).astype(np.int64))
            class_to_task += [i] * len(uniq)
            offset += len(uniq)
        return targets, np.asarray(class_to_task, dtype=np.int64)
    targets = [np.full(len(t.train), i, dtype=np.int64) for i, t in enumerate(tasks)]
    return targets, np.arange(len(tasks), dtype=np.int64)


def _train_classifier(taskset: TaskSet) -> dict:
    """Deterministic training on the real train images; returns the cache payload."""
    targets, class_to_task = _class_targets(taskset)
    x = torch.from_numpy(np.concatenate([t.train for t in taskset.tasks]).astype(np.float32))
    y = torch.from_numpy(np.concatenate(targets))
    generator = torch.Generator().manual_seed(TRAIN_SEED)
    with torch.random.fork_rng(devices=[]):  # don't disturb the caller's global RNG stream
        torch.manual_seed(TRAIN_SEED)
        model = FeatureClassifier(x.shape[1], len(class_to_task), max(x.shape[2:]))
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, TRAIN_STEPS)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    model.train()
    order = torch.randperm(len(x), generator=generator)
    cursor = 0
    for _ in range(TRAIN_STEPS):
        if cursor + BATCH_SIZE > len(order):
            order, cursor = torch.randperm(len(x), generator=generator), 0
        batch = order[cursor:cursor + BATCH_SIZE]
        cursor += BATCH_SIZE
        optimiser.zero_grad(set_to_none=True)
        loss_fn(model(x[batch]), y[batch]).backward()
        optimiser.step()
        schedule.step()
    model.eval()
    with torch.inference_mode():
        feats = torch.cat([model.features(chunk) for chunk in x.split(4096)])
    return {
        "version": CLASSIFIER_VERSION,
        "fingerprint": taskset.fingerprint(),
        "channels": int(x.shape[1]),
        "n_classes": int(len(class_to_task)),
        "state_dict": model.state_dict(),
        "class_to_task": torch.from_numpy(class_to_task),
        "feature_mean": feats.mean(0),
        "feature_std": feats.std(0).clamp_min(1e-6),
    }


def _bundle_from_payload(payload: dict, taskset: TaskSet) -> _ClassifierBundle:
    """Raises on anything that does not match this TaskSet (treated like a corrupt file)."""
    if payload["version"] != CLASSIFIER_VERSION or payload["fingerprint"] != taskset.fingerprint():
        raise ValueError("cache entry belongs to another classifier or task set")
    model = FeatureClassifier(int(payload["channels"]), int(payload["n_classes"]),
                              max(taskset.image_shape[1:]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    class_to_task = payload["class_to_task"].long()
    if int(class_to_task.max()) != taskset.n_tasks - 1:
        raise ValueError("cache entry has a different number of tasks")
    return _ClassifierBundle(model, class_to_task, payload["feature_mean"].float(),
                             payload["feature_std"].float())


def _atomic_torch_save(payload: dict, path: Path) -> None:
    """tmp file in the same directory + os.replace: racing trials never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_or_train_classifier(taskset: TaskSet, cache_dir: str | os.PathLike | None = None
                             ) -> tuple[_ClassifierBundle, bool]:
    """The cached classifier for this TaskSet, training (and caching) it if absent or unreadable.

    Returns (bundle, trained_now).
    """
    path = classifier_cache_path(taskset, cache_dir)
    if path.exists():
        try:
            return _bundle_from_payload(torch.load(path, map_location="cpu", weights_only=True),
                                        taskset), False
        except Exception:  # noqa: BLE001 -- any unreadable/mismatched entry is simply retrained
            pass
    payload = _train_classifier(taskset)
    _atomic_torch_save(payload, path)
    return _bundle_from_payload(payload, taskset), True


# ----------------------------------------------------------------------------- metric formulas

def _stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu_ref: np.ndarray, sqrt_cov_ref: np.ndarray, mu: np.ndarray,
                     cov: np.ndarray) -> float:
    """||mu1-mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), clipped at 0.

    tr((S1 S2)^1/2) = tr((S1^1/2 S2 S1^1/2)^1/2): the latter is symmetric PSD, so an eigh gives it
    stably even for singular covariances (no complex parts, no eps fallback needed).
    """
    inner = sqrt_cov_ref @ cov @ sqrt_cov_ref
    eig = np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)
    tr_ref = float(np.sum(sqrt_cov_ref * sqrt_cov_ref))  # = tr(S1) from its square root
    value = float(np.sum((mu_ref - mu) ** 2) + tr_ref + np.trace(cov) - 2 * np.sum(np.sqrt(eig)))
    return max(value, 0.0)


def kernel_inception_distance(ref: np.ndarray, fake: np.ndarray, k_ref_ref_sum: float | None = None
                              ) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018); may be slightly < 0."""
    d = ref.shape[1]
    m, n = len(ref), len(fake)
    if k_ref_ref_sum is None:
        k_rr = (ref @ ref.T / d + 1) ** 3
        k_ref_ref_sum = float(k_rr.sum() - np.trace(k_rr))
    k_ff = (fake @ fake.T / d + 1) ** 3
    k_rf = (ref @ fake.T / d + 1) ** 3
    return (k_ref_ref_sum / (m * (m - 1)) + (k_ff.sum() - np.trace(k_ff)) / (n * (n - 1))
            - 2 * k_rf.mean())


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0)


def _knn_radii_sq(points: np.ndarray, k: int) -> np.ndarray:
    """Squared distance of each point to its k-th nearest other point."""
    dist = _sq_dists(points, points)
    k = min(k, len(points) - 1)
    return np.partition(dist, k, axis=1)[:, k]  # column 0 of the sorted row is the point itself


def precision_recall(ref: np.ndarray, fake: np.ndarray, ref_radii_sq: np.ndarray | None = None,
                     k: int = PR_NEIGHBOURS) -> tuple[float, float]:
    """Improved precision/recall (Kynkaanniemi et al. 2019): k-NN balls around each set's points."""
    if ref_radii_sq is None:
        ref_radii_sq = _knn_radii_sq(ref, k)
    cross = _sq_dists(fake, ref)  # (n_fake, n_ref)
    precision = float(np.mean((cross <= ref_radii_sq[None, :]).any(1)))
    fake_radii_sq = _knn_radii_sq(fake, k)
    recall = float(np.mean((cross <= fake_radii_sq[:, None]).any(0)))
    return precision, recall


def nearest_distances(points: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Pixel-space Euclidean distance of each image to its nearest training image."""
    a = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    b = np.asarray(train, dtype=np.float64).reshape(len(train), -1)
    return np.sqrt(_sq_dists(a, b).min(1))


def nn_ratio(fake: np.ndarray, train: np.ndarray, reference: np.ndarray) -> float:
    """median nearest-training distance of the samples ÷ that of real images not trained on."""
    return float(np.median(nearest_distances(fake, train)) / np.median(nearest_distances(reference, train)))


def _kmeans_cells(train: np.ndarray, k: int, iterations: int = 20) -> np.ndarray:
    """k centres of the training images (Lloyd, deterministic k-means++ start)."""
    rng = np.random.default_rng(0)
    centres = [train[rng.integers(len(train))]]
    for _ in range(1, k):
        d2 = _sq_dists(train, np.array(centres)).min(1)
        if d2.sum() <= 0:
            break
        centres.append(train[rng.choice(len(train), p=d2 / d2.sum())])
    centres = np.array(centres)
    for _ in range(iterations):
        cell = _sq_dists(train, centres).argmin(1)
        centres = np.array([train[cell == c].mean(0) if np.any(cell == c) else centres[c]
                            for c in range(len(centres))])
    return centres


def mann_whitney_z(sample: np.ndarray, reference: np.ndarray) -> float:
    """(U - mn/2) / sqrt(mn(m+n+1)/12), U = #{sample > reference} (+1/2 per tie): < 0 when the
    sample's values are smaller."""
    from scipy.stats import rankdata

    m, n = len(sample), len(reference)
    ranks = rankdata(np.concatenate([sample, reference]))
    u = ranks[:m].sum() - m * (m + 1) / 2
    return float((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))


@dataclass(frozen=True)
class CopyReference:
    """What the copy measures need of a task's training and unseen images, computed once."""

    train: np.ndarray  # (N, D) float64 training images, flattened
    centres: np.ndarray  # (k, D) k-means cells of the training images (C_T)
    distances: np.ndarray  # (M,) nearest-training distance of each unseen image
    cells: np.ndarray  # (M,) the cell of each unseen image

    @classmethod
    def build(cls, train: np.ndarray, reference: np.ndarray, cells: int | None = None) -> "CopyReference":
        t = np.asarray(train, dtype=np.float64).reshape(len(train), -1)
        r = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
        if cells is None:
            cells = int(np.clip(len(r) // CT_REFERENCE_PER_CELL, 1, min(CT_MAX_CELLS, len(t))))
        centres = _kmeans_cells(t, cells)
        return cls(t, centres, nearest_distances(r, t), _sq_dists(r, centres).argmin(1))

    def measure(self, fake: np.ndarray) -> tuple[float, float]:
        """(nn_ratio, C_T) of the samples; C_T is NaN if no cell holds CT_MIN_SAMPLES samples."""
        f = np.asarray(fake, dtype=np.float64).reshape(len(fake), -1)
        fake_d, fake_cell = nearest_distances(f, self.train), _sq_dists(f, self.centres).argmin(1)
        z, weight = [], []
        for c in range(len(self.centres)):
            in_fake, in_ref = fake_cell == c, self.cells == c
            if in_fake.sum() >= CT_MIN_SAMPLES and in_ref.sum() >= 1:
                z.append(mann_whitney_z(fake_d[in_fake], self.distances[in_ref]))
                weight.append(in_ref.mean())
        ct = float(np.dot(z, weight) / np.sum(weight)) if z else float("nan")
        return float(np.median(fake_d) / np.median(self.distances)), ct


def copy_test_ct(fake: np.ndarray, train: np.ndarray, reference: np.ndarray,
                 cells: int | None = None) -> float:
    """Meehan et al. 2020's C_T in pixel space (see the module docstring); NaN if no cell counts."""
    return CopyReference.build(train, reference, cells).measure(fake)[1]


# ----------------------------------------------------------------------------- the metrics object

@dataclass
class _Reference:
    features: np.ndarray
    mean: np.ndarray
    sqrt_cov: np.ndarray
    kernel_sum: float
    radii_sq: np.ndarray
    copy: CopyReference  # the training and unseen images in pixel space, for nn_ratio and C_T


def unseen_images(reference: Task, trained: Task) -> np.ndarray:
    """Every image of a task that the generator did not train on: the held-out split plus the
    images of the train pool outside the trained subset (matched by content, so a pool image
    identical to a trained one counts as trained)."""
    seen = {row.tobytes() for row in np.ascontiguousarray(trained.train, dtype=np.float32)}
    pool = np.ascontiguousarray(reference.train, dtype=np.float32)
    rest = pool[[row.tobytes() not in seen for row in pool]] if len(pool) else pool
    return np.concatenate([reference.test.astype(np.float32), rest])


class TaskMetrics:
    """Per-task FID, KID, precision, recall, classifier accuracy and copying (nn_ratio, copy_ct)
    of generated samples.

    ``taskset`` is what quality is measured against (the uncapped tasks: they train the
    classifier); ``trained`` is what the generator trained on (a capped, seed-dependent subset;
    default: ``taskset`` itself). The classifier is loaded from the cache (or trained and cached)
    at construction; the reference statistics of every task (images not trained on) are
    precomputed so evaluate() is cheap enough to run at every training iteration.
    """

    def __init__(self, taskset: TaskSet, cache_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", trained: TaskSet | None = None) -> None:
        self.taskset = taskset
        self.trained = taskset if trained is None else trained
        if self.trained.names != taskset.names or self.trained.image_shape != taskset.image_shape:
            raise ValueError("the trained tasks must be the reference tasks' names and image shape")
        self.device = torch.device(device)
        self.cache_path = classifier_cache_path(taskset, cache_dir)
        bundle, self.trained_classifier = load_or_train_classifier(taskset, cache_dir)
        self._model = bundle.model.to(self.device)
        self._class_to_task = bundle.class_to_task.to(self.device)
        self._feature_mean = bundle.feature_mean.to(self.device)
        self._feature_std = bundle.feature_std.to(self.device)
        self._reference: list[_Reference] = []
        self.held_out_accuracy: list[float] = []  # classifier accuracy on each task's test split
        for i, (task, trained_task) in enumerate(zip(taskset.tasks, self.trained.tasks)):
            self.held_out_accuracy.append(float(np.mean(self._features_and_tasks(task.test)[1] == i)))
            unseen = unseen_images(task, trained_task)
            feats, _ = self._features_and_tasks(unseen)
            d = feats.shape[1]
            k_rr = (feats @ feats.T / d + 1) ** 3
            mean, cov = _stats(feats)
            self._reference.append(_Reference(
                feats, mean, _sqrt_psd(cov), float(k_rr.sum() - np.trace(k_rr)),
                _knn_radii_sq(feats, PR_NEIGHBOURS), CopyReference.build(trained_task.train, unseen)))

    @property
    def feature_dim(self) -> int:
        return FEATURE_DIM

    def _features_and_tasks(self, images: Images) -> tuple[np.ndarray, np.ndarray]:
        """Standardised float64 features and the predicted task index of each image."""
        x = torch.as_tensor(images).to(self.device, torch.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.taskset.image_shape):
            raise ValueError(f"images must have shape (N, {', '.join(map(str, self.taskset.image_shape))}),"
                             f" got {tuple(x.shape)}")
        feats, tasks = [], []
        with torch.inference_mode():
            for chunk in x.split(4096):
                f = self._model.features(chunk)
                probs = self._model.head(f).softmax(1)
                # A sample's task is the task whose classes hold the most probability mass.
                per_task = torch.zeros(len(chunk), self.taskset.n_tasks, device=self.device)
                per_task.index_add_(1, self._class_to_task, probs)
                feats.append((f - self._feature_mean) / self._feature_std)
                tasks.append(per_task.argmax(1))
        return (torch.cat(feats).double().cpu().numpy(), torch.cat(tasks).cpu().numpy())

    def _task_metrics(self, index: int, images: np.ndarray, feats: np.ndarray, predicted: np.ndarray
                      ) -> dict[str, float]:
        ref = self._reference[index]
        if len(feats) < 2:
            raise ValueError(f"task {self.taskset.names[index]}: need >= 2 samples, got {len(feats)}")
        mean, cov = _stats(feats)
        precision, recall = precision_recall(ref.features, feats, ref.radii_sq)
        ratio, ct = ref.copy.measure(images)
        return {
            "fid": frechet_distance(ref.mean, ref.sqrt_cov, mean, cov),
            "kid": float(kernel_inception_distance(ref.features, feats, ref.kernel_sum)),
            "precision": precision,
            "recall": recall,
            "accuracy": float(np.mean(predicted == index)),
            "nn_ratio": ratio,
            "copy_ct": ct,
        }

    def evaluate(self, fake: Images | Sequence[Images]) -> list[dict[str, float]]:
        """fake: (n_tasks, k, C, H, W) or a list of per-task (k_i, C, H, W), values in [-1, 1].

        Returns one dict per task (keys METRIC_KEYS): fid, kid, precision, recall, accuracy
        (fraction of the task's samples the classifier assigns to that task), nn_ratio and copy_ct
        (pixel-space copying of the training images, see the module docstring).
        """
        if len(fake) != self.taskset.n_tasks:
            raise ValueError(f"expected samples for {self.taskset.n_tasks} tasks, got {len(fake)}")
        per_task = [torch.as_tensor(np.asarray(f) if not isinstance(f, torch.Tensor) else f)
                    for f in fake]
        sizes = [len(f) for f in per_task]
        # One forward pass for all tasks: cheaper than n small ones.
        feats, predicted = self._features_and_tasks(torch.cat([f.to(self.device) for f in per_task]))
        bounds = np.cumsum([0] + sizes)
        return [self._task_metrics(i, per_task[i].detach().cpu().numpy(), feats[bounds[i]:bounds[i + 1]],
                                   predicted[bounds[i]:bounds[i + 1]])
                for i in range(self.taskset.n_tasks)]

    def evaluate_arms(self, fake: torch.Tensor) -> list[list[dict[str, float]]]:
        """fake: (arms, n_tasks, k, C, H, W). One classifier pass for every arm's samples, then
        evaluate()'s metrics per arm and task."""
        arms, n, k = fake.shape[:3]
        feats, predicted = self._features_and_tasks(fake.reshape(arms * n * k, *fake.shape[3:]))
        feats, predicted = feats.reshape(arms, n, k, -1), predicted.reshape(arms, n, k)
        pixels = fake.detach().cpu().numpy()
        return [[self._task_metrics(i, pixels[a, i], feats[a, i], predicted[a, i]) for i in range(n)]
                for a in range(arms)]

    def real_floor(self) -> list[dict[str, float]]:
        """The same metrics for the images the generator trained on, against the unseen ones.

        This is what a generator that replays its training set scores (nn_ratio 0, copy_ct ≪ 0):
        read evaluate() numbers against it; with the whole pool trained on it is also about what
        fresh samples of the true distribution would score, up to sample size. "accuracy" here
        is the classifier's accuracy on the held-out split (train accuracy would flatter it).
        """
        floor = self.evaluate([t.train for t in self.trained.tasks])
        for row, accuracy in zip(floor, self.held_out_accuracy):
            row["accuracy"] = accuracy
        return floor


# ----------------------------------------------------------------------------- sample grids

def _to_numpy_images(images: Images | Sequence[Images]) -> list[np.ndarray]:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    rows = [np.asarray(r.detach().cpu() if isinstance(r, torch.Tensor) else r, dtype=np.float32)
            for r in images]
    if not rows or any(r.ndim != 4 for r in rows):
        raise ValueError("images must be (n_tasks, k, C, H, W) or a list of (k, C, H, W) arrays")
    return rows


def grid_image(images: Images | Sequence[Images], names: Sequence[str] | None = None,
               scale: int | None = None, pad: int = 2) -> Image.Image:
    """One row per task, samples side by side, nearest-neighbour upscaled (8x8 -> 48x48 by default).

    Size without names: width = pad + k * (W*scale + pad), height = pad + n * (H*scale + pad);
    names add a label column on the left.
    """
    rows = _to_numpy_images(images)
    channels, height, width = rows[0].shape[1:]
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {channels}")
    if names is not None and len(names) != len(rows):
        raise ValueError(f"{len(names)} names for {len(rows)} rows of images")
    scale = scale or max(1, math.ceil(48 / height))
    cell_h, cell_w = height * scale, width * scale
    k = max(len(r) for r in rows)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = 0 if names is None else max(int(probe.textlength(str(n), font=font)) for n in names) + 2 * pad
    canvas = Image.new("RGB", (label_w + pad + k * (cell_w + pad), pad + len(rows) * (cell_h + pad)),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        top = pad + r * (cell_h + pad)
        pixels = np.clip((row + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        if channels == 1:
            pixels = np.repeat(pixels, 3, axis=3)
        pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest-neighbour upscale
        for c, cell in enumerate(pixels):
            canvas.paste(Image.fromarray(cell, "RGB"), (label_w + pad + c * (cell_w + pad), top))
        if names is not None:
            draw.text((pad, top + cell_h // 2), str(names[r]), fill=(0, 0, 0), font=font, anchor="lm")
    return canvas


def save_grid(images: Images | Sequence[Images], path: str | os.PathLike,
              names: Sequence[str] | None = None, scale: int | None = None) -> Path:
    """Write grid_image(images, names) as a PNG (atomically); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    grid_image(images, names, scale).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
