"""Tasks and their data: one image distribution per task, with a fixed held-out split.

``load_tasks(spec)`` reads a task spec (``digits:classes=0,1,2``, ``shapes:...``, ``npz:PATH``,
``folder:PATH``; the README's "Tasks and data"). The spec grammar, each kind's exact reading and
the split rule are in CONVENTIONS.md, "Task specs".
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TASK_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
KNOWN_KINDS = ("digits", "folder", "npz", "shapes")
DIGIT_DOMAINS = ("plain", "inverted", "rot90", "flip")
MIN_SIDE, MAX_SIDE = 4, 64
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAYSCALE_MODES = ("1", "L", "LA")
COLOUR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


@dataclass(frozen=True)
class Task:
    name: str
    train: np.ndarray  # float32 (N, C, H, W) in [-1, 1]
    test: np.ndarray  # float32 (M, C, H, W) in [-1, 1]; fixed held-out split for evaluation
    train_labels: np.ndarray | None = None  # int64 (N,) class labels inside the source, if known
    test_labels: np.ndarray | None = None


@dataclass(frozen=True)
class TaskSet:
    spec: str
    tasks: tuple[Task, ...]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.tasks[0].train.shape[1:])  # type: ignore[return-value]

    def fingerprint(self) -> str:
        """Stable hash of names and arrays (metric caches are keyed by it).

        sha256 over, per task in order: the name, then train, test, train_labels, test_labels,
        each as dtype + shape + C-order bytes (absent labels hashed as a marker). The spec string
        is not included: the same data loaded through different specs hashes the same.
        """
        digest = hashlib.sha256()
        for task in self.tasks:
            digest.update(f"task:{len(task.name)}:{task.name}".encode())
            for part in (task.train, task.test, task.train_labels, task.test_labels):
                if part is None:
                    digest.update(b"none;")
                    continue
                array = np.ascontiguousarray(part)
                digest.update(f"{array.dtype.str}{array.shape};".encode())
                digest.update(array.tobytes())
        return digest.hexdigest()


# ----------------------------------------------------------------------------- spec parsing

@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: str = ""  # npz / folder
    options: dict[str, list[str]] = field(default_factory=dict)  # digits / shapes


def parse_spec(spec: str) -> DataSpec:
    """Split a data spec into kind and path or options (grammar in the module docstring)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"data spec {spec!r}: empty — expected one of {', '.join(KNOWN_KINDS)}")
    kind, _, body = spec.strip().partition(":")
    kind = kind.strip()
    if kind not in KNOWN_KINDS:
        raise ValueError(f"data spec {spec!r}: unknown kind {kind!r} — known kinds: "
                         f"{', '.join(KNOWN_KINDS)}")
    if kind in ("npz", "folder"):
        if not body.strip():
            raise ValueError(f"data spec {spec!r}: missing path — expected {kind}:PATH")
        return DataSpec(kind, path=body.strip())
    options: dict[str, list[str]] = {}
    current: str | None = None
    for item in re.split(r"([,;])", body):
        item = item.strip()
        if item == ";":
            current = None  # ';' always ends the current list
        if item in ("", ",", ";"):
            continue
        if "=" in item:
            key, _, value = item.partition("=")
            key = key.strip()
            if not key:
                raise ValueError(f"data spec {spec!r}: item {item!r} has no key")
            if key in options:
                raise ValueError(f"data spec {spec!r}: option {key!r} given twice")
            value = value.strip()
            options[key] = [value] if value else []
            current = key
        elif current is None:
            raise ValueError(f"data spec {spec!r}: item {item!r} is not key=value")
        else:
            options[current].append(item)
    return DataSpec(kind, options=options)


def _check_known_options(spec: str, options: dict[str, list[str]], known: tuple[str, ...]) -> None:
    for key in options:
        if key not in known:
            raise ValueError(f"data spec {spec!r}: unknown option {key!r} — known: {', '.join(known)}")


def _scalar(spec: str, options: dict[str, list[str]], key: str, kind: type, default):
    if key not in options:
        return default
    values = options[key]
    if len(values) != 1:
        raise ValueError(f"data spec {spec!r}: option {key!r} takes one value, got {values}")
    try:
        return kind(values[0])
    except ValueError:
        raise ValueError(f"data spec {spec!r}: option {key!r}={values[0]!r} is not "
                         f"{'an integer' if kind is int else 'a number'}") from None


# ----------------------------------------------------------------------------- splitting

def _split_task(name: str, images: np.ndarray, labels: np.ndarray | None,
                samples_per_task: int | None, test_fraction: float, split_seed: int,
                source: str, subset_seed: tuple[int, ...] = ()) -> Task:
    count = len(images)
    n_test = max(1, int(round(count * test_fraction)))
    if count - n_test < 1:
        raise ValueError(f"{source}: task {name!r} has {count} image(s) — need at least 2 "
                         f"(>= 1 train and >= 1 test at test_fraction={test_fraction})")
    rng = np.random.default_rng([split_seed, zlib.crc32(name.encode())])
    order = rng.permutation(count)
    test_idx, train_idx = order[:n_test], order[n_test:]
    if samples_per_task is not None:
        if subset_seed and samples_per_task < len(train_idx):
            subset_rng = np.random.default_rng([split_seed, *subset_seed, zlib.crc32(name.encode())])
            train_idx = subset_rng.permutation(train_idx)
        train_idx = train_idx[:samples_per_task]
    images = images.astype(np.float32, copy=False)
    return Task(
        name=name,
        train=np.ascontiguousarray(images[train_idx]),
        test=np.ascontiguousarray(images[test_idx]),
        train_labels=None if labels is None else labels[train_idx].astype(np.int64),
        test_labels=None if labels is None else labels[test_idx].astype(np.int64),
    )


def load_tasks(spec: str, samples_per_task: int | None = None, test_fraction: float = 0.25,
               split_seed: int = 0, subset_seed: int | tuple[int, ...] | None = None) -> TaskSet:
    """Load the tasks a spec names, each split into a fixed train / held-out test part.

    Returns float32 (N, C, H, W) arrays in [-1, 1]. See the module docstring for the spec grammar,
    the kinds and the split rule. Every problem raises a one-line ``ValueError``.
    """
    if samples_per_task is not None and (isinstance(samples_per_task, bool)
                                         or not isinstance(samples_per_task, (int, np.integer))
                                         or samples_per_task < 1):
        raise ValueError(f"samples_per_task={samples_per_task!r} — expected None or an integer >= 1")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} — expected a number in (0, 1)")
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or split_seed < 0:
        raise ValueError(f"split_seed={split_seed!r} — expected an integer >= 0")
    subset = () if subset_seed is None else tuple(np.atleast_1d(subset_seed).tolist())
    if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in subset):
        raise ValueError(f"subset_seed={subset_seed!r} — expected None or integers >= 0")
    parsed = parse_spec(spec)
    loaders = {"digits": _load_digits, "shapes": _load_shapes, "npz": _load_npz,
               "folder": _load_folder}
    named, source = loaders[parsed.kind](spec, parsed)
    tasks = tuple(_split_task(name, images, labels, samples_per_task, float(test_fraction),
                              int(split_seed), source, subset)
                  for name, images, labels in named)
    return TaskSet(spec=spec, tasks=tasks)


# ----------------------------------------------------------------------------- digits

@functools.lru_cache(maxsize=1)
def _digits_source() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as float32 (N, 1, 8, 8) in [-1, 1] and their int64 classes."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0 * 2.0 - 1.0)[:, None]
    images.setflags(write=False)
    classes = bunch.target.astype(np.int64)
    classes.setflags(write=False)
    return images, classes


def apply_digit_domain(domain: str, images: np.ndarray) -> np.ndarray:
    """Transform (N, C, H, W) images in [-1, 1] into a digit domain."""
    if domain == "plain":
        out = images
    elif domain == "inverted":
        out = -images
    elif domain == "rot90":
        out = np.rot90(images, k=1, axes=(2, 3))
    elif domain == "flip":
        out = images[..., ::-1]
    else:
        raise ValueError(f"unknown digit domain {domain!r} — known: {', '.join(DIGIT_DOMAINS)}")
    return np.ascontiguousarray(out, dtype=np.float32)


def _unique_list(spec: str, key: str, values: list[str]) -> list[str]:
    if not values:
        raise ValueError(f"data spec {spec!r}: option {key!r} is empty")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"data spec {spec!r}: {key} lists {repeated[0]!r} more than once")
    return values


def _load_digits(spec: str, parsed: DataSpec):
    options = parsed.options or {"classes": ["0", "1", "2", "3"]}
    _check_known_options(spec, options, ("classes", "domains"))
    if "classes" in options and "domains" in options:
        raise ValueError(f"data spec {spec!r}: give either classes= or domains=, not both")
    images, classes = _digits_source()
    if "domains" in options:
        domains = _unique_list(spec, "domains", options["domains"])
        for domain in domains:
            if domain not in DIGIT_DOMAINS:
                raise ValueError(f"data spec {spec!r}: unknown domain {domain!r} — known: "
                                 f"{', '.join(DIGIT_DOMAINS)}")
        source_index = np.arange(len(images)) % len(DIGIT_DOMAINS)
        named = []
        for domain in domains:
            members = source_index == DIGIT_DOMAINS.index(domain)
            named.append((domain, apply_digit_domain(domain, images[members]), classes[members]))
        return named, spec
    named = []
    for value in _unique_list(spec, "classes", options["classes"]):
        if value not in [str(d) for d in range(10)]:
            raise ValueError(f"data spec {spec!r}: unknown class {value!r} — expected 0..9")
        members = classes == int(value)
        named.append((value, images[members], classes[members]))
    return named, spec


# ----------------------------------------------------------------------------- shapes

# Overall range of every shape parameter; positions and sizes are fractions of the image side.
SHAPE_PARAMETERS: dict[str, tuple[float, float]] = {
    "center_x": (0.3, 0.7),
    "center_y": (0.3, 0.7),
    "radius": (0.15, 0.35),  # major semi-axis
    "aspect": (0.35, 1.0),  # minor / major semi-axis
    "rotation": (0.0, np.pi),
    "squareness": (2.0, 8.0),  # superellipse exponent: 2 = ellipse, 8 ~ rounded rectangle
    "intensity": (0.35, 1.0),  # foreground level in [0, 1] on a 0 background
}


def shape_parameter_ranges(n_tasks: int, relatedness: float) -> dict[str, np.ndarray]:
    """Per parameter, an (n_tasks, 2) array of [low, high] uniform ranges, one row per task.

    Each parameter's overall range is cut into n_tasks equal slices; task t owns slice t. A task's
    range is the straight interpolation ``(1 - r) * own slice + r * overall range``: r = 0 gives
    disjoint ranges (unrelated tasks), r = 1 the same overall range for all (identical
    distributions), and the overlap between tasks grows monotonically with r.
    """
    ranges = {}
    for name, (low, high) in SHAPE_PARAMETERS.items():
        edges = np.linspace(low, high, n_tasks + 1)
        own = np.stack([edges[:-1], edges[1:]], axis=1)
        ranges[name] = (1.0 - relatedness) * own + relatedness * np.array([low, high])
    return ranges


def render_shapes(params: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Render filled, anti-aliased superellipses: float32 (N, 1, size, size) in [-1, 1]."""
    coords = np.arange(size, dtype=np.float64) + 0.5
    x, y = coords[None, None, :], coords[None, :, None]

    def column(name: str) -> np.ndarray:
        return params[name][:, None, None]

    dx, dy = x - column("center_x") * size, y - column("center_y") * size
    cos, sin = np.cos(column("rotation")), np.sin(column("rotation"))
    major = column("radius") * size
    minor = major * column("aspect")
    power = column("squareness")
    u = np.abs(dx * cos + dy * sin) / major
    v = np.abs(-dx * sin + dy * cos) / minor
    radial = (u ** power + v ** power) ** (1.0 / power)  # 1 on the boundary
    # ~1 pixel soft edge: distance to the boundary measured in pixels along the mean semi-axis
    coverage = np.clip(0.5 + (1.0 - radial) * np.sqrt(major * minor), 0.0, 1.0)
    images = column("intensity") * coverage * 2.0 - 1.0
    return images[:, None].astype(np.float32)


def _load_shapes(spec: str, parsed: DataSpec):
    options = parsed.options
    _check_known_options(spec, options, ("tasks", "relatedness", "size", "n", "seed"))
    n_tasks = _scalar(spec, options, "tasks", int, 4)
    relatedness = _scalar(spec, options, "relatedness", float, 0.8)
    size = _scalar(spec, options, "size", int, 16)
    count = _scalar(spec, options, "n", int, 200)
    seed = _scalar(spec, options, "seed", int, 0)
    if not 1 <= n_tasks <= 64:
        raise ValueError(f"data spec {spec!r}: tasks={n_tasks} — expected 1..64")
    if not 0.0 <= relatedness <= 1.0:
        raise ValueError(f"data spec {spec!r}: relatedness={relatedness} — expected 0..1")
    if not 8 <= size <= 32:
        raise ValueError(f"data spec {spec!r}: size={size} — expected 8..32")
    if count < 2:
        raise ValueError(f"data spec {spec!r}: n={count} — expected >= 2")
    if seed < 0:
        raise ValueError(f"data spec {spec!r}: seed={seed} — expected >= 0")
    ranges = shape_parameter_ranges(n_tasks, relatedness)
    named = []
    for task in range(n_tasks):
        rng = np.random.default_rng([seed, task])
        params = {name: rng.uniform(bounds[task, 0], bounds[task, 1], size=count)
                  for name, bounds in ranges.items()}
        named.append((f"t{task}", render_shapes(params, size), None))
    return named, spec


# ----------------------------------------------------------------------------- user files

def _check_task_name(source: str, name: str) -> None:
    if not TASK_NAME_RE.fullmatch(name):
        raise ValueError(f"{source}: task name {name!r} is not allowed — use letters, digits, _ and -")


def _check_same_geometry(source: str, named: list, first_name: str, name: str,
                         shape: tuple[int, ...]) -> None:
    """Image size limits and equal (C, H, W) across tasks."""
    channels, height, width = shape
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
        raise ValueError(f"{source}: task {name!r} has {height}×{width} images — expected "
                         f"{MIN_SIDE}×{MIN_SIDE} .. {MAX_SIDE}×{MAX_SIDE}")
    if named and named[0][1].shape[1:] != shape:
        raise ValueError(f"{source}: task {name!r} has images of C×H×W {shape}, task "
                         f"{first_name!r} has {named[0][1].shape[1:]} — all tasks must match")


def _load_npz(spec: str, parsed: DataSpec):
    source = parsed.path
    path = Path(parsed.path).expanduser()
    if not path.is_file():
        raise ValueError(f"{source}: file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{source}: not a readable .npz file ({type(exc).__name__})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{source}: holds a single array, not an .npz archive of one array per task")
    raw: list[tuple[str, np.ndarray]] = []
    with archive:
        if not archive.files:
            raise ValueError(f"{source}: holds no arrays — expected one array per task")
        for name in archive.files:
            _check_task_name(source, name)
        _check_npz_declared_sizes(source, path)
        for name in archive.files:
            try:
                array = archive[name]
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
                raise ValueError(f"{source}: task {name!r} cannot be read "
                                 f"({type(exc).__name__}: {exc})".splitlines()[0]) from None
            raw.append((name, array))
    for name, array in raw:
        if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{source}: task {name!r} has dtype {array.dtype} — expected uint8 or float")
        if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[1] not in (1, 3)):
            raise ValueError(f"{source}: task {name!r} has shape {array.shape} — expected N×H×W or "
                             "N×C×H×W with C in {1, 3} (channels first)")
        if array.shape[0] == 0:
            raise ValueError(f"{source}: task {name!r} is empty (shape {array.shape})")
        if array.dtype != np.uint8 and not np.all(np.isfinite(array)):
            raise ValueError(f"{source}: task {name!r} has non-finite values (NaN or Inf)")
    float_arrays = [(name, a) for name, a in raw if a.dtype != np.uint8]
    zero_one = all(a.min() >= 0.0 and a.max() <= 1.0 for _, a in float_arrays)
    for name, array in float_arrays:
        if array.min() < -1.0 or array.max() > 1.0:
            raise ValueError(f"{source}: task {name!r} has float values in [{array.min():.4g}, "
                             f"{array.max():.4g}] — expected [0, 1] or [-1, 1]")
    named: list = []
    for name, array in raw:
        images = array if array.ndim == 4 else array[:, None]
        _check_same_geometry(source, named, named[0][0] if named else name, name, images.shape[1:])
        if images.dtype == np.uint8:
            scaled = images.astype(np.float32) / 127.5 - 1.0
        elif zero_one:
            scaled = images.astype(np.float32) * 2.0 - 1.0
        else:
            scaled = images.astype(np.float32)
        named.append((name, np.clip(scaled, -1.0, 1.0), None))
    return named, source


def _check_image_header(source: str, relative: Path, size: tuple[int, int],
                        reference: tuple[Path, tuple[int, int]] | None) -> None:
    """Refuse an image by the size its header declares, before any pixel is decoded."""
    width, height = size
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
        raise ValueError(f"{source}: {str(relative)!r} is {width}×{height} (W×H) — expected "
                         f"{MIN_SIDE}×{MIN_SIDE} .. {MAX_SIDE}×{MAX_SIDE}")
    if reference is not None and size != reference[1]:
        raise ValueError(f"{source}: {str(relative)!r} is {width}×{height} "
                         f"(W×H), but {str(reference[0])!r} is "
                         f"{reference[1][0]}×{reference[1][1]} — all images must match")


def available_memory_bytes() -> int:
    """Memory this machine can give a new allocation now (MemAvailable on Linux, else total RAM)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return 1 << 34  # 16 GiB: an unknown machine is assumed ordinary, not unbounded


def _check_npz_declared_sizes(source: str, path: Path) -> None:
    """Refuse an archive whose members declare more than the machine can hold, before reading any.

    Each member's .npy header states its shape and dtype; loading needs the raw array plus a
    float32 copy, and that total must stay under half the memory available now (a header can
    declare 60 GiB in a few bytes of a compressed file)."""
    cap = available_memory_bytes() // 2
    needed = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[:-len(".npy")]
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise ValueError(f"unsupported .npy format version {version}")
                count = math.prod(shape)
                needed += count * (dtype.itemsize + 4)
                if needed > cap:
                    raise ValueError(
                        f"{source}: task {name!r} declares shape {tuple(shape)} of {dtype} "
                        f"({count * dtype.itemsize / 2**30:.3g} GiB) — loading the archive needs more than "
                        f"half of this machine's available memory ({cap * 2 / 2**30:.3g} GiB)")
    except ValueError as exc:
        raise ValueError(str(exc) if str(exc).startswith(f"{source}: ") else
                         f"{source}: a member's .npy header cannot be read ({exc})".splitlines()[0]) from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{source}: not a readable .npz file ({type(exc).__name__})") from None


def _load_folder(spec: str, parsed: DataSpec):
    from PIL import Image, UnidentifiedImageError

    source = parsed.path
    root = Path(parsed.path).expanduser()
    if not root.is_dir():
        raise ValueError(f"{source}: folder not found")
    task_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not task_dirs:
        raise ValueError(f"{source}: no task subfolders — expected {source}/<task>/*.png")
    loaded: list[tuple[str, list[tuple[Path, Image.Image]]]] = []
    reference: tuple[Path, tuple[int, int]] | None = None
    for task_dir in task_dirs:
        _check_task_name(source, task_dir.name)
        files = sorted(p for p in task_dir.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{source}: task {task_dir.name!r} has no .png/.jpg/.jpeg images")
        images = []
        for file in files:
            relative = file.relative_to(root)
            try:
                with Image.open(file) as opened:  # reads the header only
                    _check_image_header(source, relative, opened.size, reference)
                    opened.load()
                    image = opened.copy()
            except Image.DecompressionBombError:
                raise ValueError(f"{source}: {str(relative)!r} declares more pixels than PIL will decode "
                                 f"(a decompression bomb?) — images must be at most "
                                 f"{MAX_SIDE}×{MAX_SIDE}") from None
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                if str(exc).startswith(f"{source}: "):
                    raise
                raise ValueError(f"{source}: {str(relative)!r} is not a readable image") from None
            if image.mode not in GRAYSCALE_MODES + COLOUR_MODES:
                raise ValueError(f"{source}: {str(relative)!r} has unsupported image mode "
                                 f"{image.mode!r} — use 8-bit grayscale or colour")
            if reference is None:
                reference = (relative, image.size)
            images.append((relative, image))
        loaded.append((task_dir.name, images))
    grayscale = all(image.mode in GRAYSCALE_MODES for _, images in loaded for _, image in images)
    mode = "L" if grayscale else "RGB"
    named: list = []
    for name, images in loaded:
        pixels = np.stack([np.asarray(image.convert(mode), dtype=np.uint8) for _, image in images])
        pixels = pixels[:, None] if grayscale else pixels.transpose(0, 3, 1, 2)
        _check_same_geometry(source, named, named[0][0] if named else name, name, pixels.shape[1:])
        named.append((name, pixels.astype(np.float32) / 127.5 - 1.0, None))
    return named, source
