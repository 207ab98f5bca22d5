"""Tasks and data: real sklearn digits, real .npz files and PNG folders, synthetic shapes."""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from trainables.data import (DIGIT_DOMAINS, SHAPE_PARAMETERS, TaskSet, apply_digit_domain,
                             load_tasks, parse_spec, shape_parameter_ranges)


def row_bytes(images: np.ndarray) -> Counter:
    return Counter(image.tobytes() for image in np.ascontiguousarray(images))


def assert_images(task_set: TaskSet, shape: tuple[int, int, int]) -> None:
    assert task_set.image_shape == shape
    for task in task_set.tasks:
        for images in (task.train, task.test):
            assert images.dtype == np.float32 and images.shape[1:] == shape
            assert images.min() >= -1.0 and images.max() <= 1.0
            assert len(images) >= 1


# ----------------------------------------------------------------------------- parser

def test_parser_lists_and_separators() -> None:
    assert parse_spec("digits:classes=0,1,2").options == {"classes": ["0", "1", "2"]}
    assert parse_spec("shapes:tasks=4,relatedness=0.8").options == {"tasks": ["4"],
                                                                    "relatedness": ["0.8"]}
    assert parse_spec("shapes: tasks=3 ; size=8 ;").options == {"tasks": ["3"], "size": ["8"]}
    assert parse_spec("npz:/a,b=c;d.npz").path == "/a,b=c;d.npz"


@pytest.mark.parametrize("spec, needle", [
    ("mnist", "unknown kind 'mnist' — known kinds: digits, folder, npz, shapes"),
    ("", "empty"),
    ("digits:classes=0,12", "unknown class '12'"),
    ("digits:classes=3,3", "'3' more than once"),
    ("digits:classes=", "'classes' is empty"),
    ("digits:domains=plain,sepia", "unknown domain 'sepia'"),
    ("digits:colour=red", "unknown option 'colour'"),
    ("digits:classes=0,1;domains=plain", "not both"),
    ("digits:classes=0;classes=1", "given twice"),
    ("digits:1,2", "not key=value"),
    ("shapes:tasks=x", "'tasks'='x' is not an integer"),
    ("shapes:tasks=2,relatedness=1.5", "relatedness=1.5"),
    ("shapes:size=7", "size=7"),
    ("shapes:size=33", "size=33"),
    ("shapes:tasks=0", "tasks=0"),
    ("shapes:tasks=2;relatedness=0.1,0.2", "takes one value"),
    ("npz:", "missing path"),
])
def test_bad_specs_name_the_problem(spec: str, needle: str) -> None:
    with pytest.raises(ValueError) as error:
        load_tasks(spec)
    assert needle in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("kwargs", [{"samples_per_task": 0}, {"samples_per_task": 1.5},
                                    {"test_fraction": 0.0}, {"test_fraction": 1.0},
                                    {"split_seed": -1}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        load_tasks("digits", **kwargs)


# ----------------------------------------------------------------------------- digits

def test_digits_classes_shapes_labels_and_values() -> None:
    task_set = load_tasks("digits:classes=7,2")
    assert task_set.names == ["7", "2"]
    assert_images(task_set, (1, 8, 8))
    source = load_digits()
    for task in task_set.tasks:
        assert set(task.train_labels) == {int(task.name)} == set(task.test_labels)
        assert task.train_labels.dtype == np.int64
        everything = np.concatenate([task.train, task.test])
        expected = source.images[source.target == int(task.name)] / 16.0 * 2 - 1
        assert row_bytes(everything) == row_bytes(expected.astype(np.float32)[:, None])
    assert load_tasks("digits").names == ["0", "1", "2", "3"]


def test_split_is_fixed_disjoint_and_independent_of_cap() -> None:
    full = load_tasks("digits:classes=0,1", split_seed=3)
    again = load_tasks("digits:classes=0,1", split_seed=3)
    capped = load_tasks("digits:classes=0,1", samples_per_task=10, split_seed=3)
    small = load_tasks("digits:classes=0,1", samples_per_task=4, split_seed=3)
    other = load_tasks("digits:classes=0,1", split_seed=4)
    for f, a, c, s, o in zip(full.tasks, again.tasks, capped.tasks, small.tasks, other.tasks):
        np.testing.assert_array_equal(f.test, a.test)
        np.testing.assert_array_equal(f.train, a.train)
        np.testing.assert_array_equal(f.test, c.test)  # held-out never depends on the cap
        np.testing.assert_array_equal(f.test_labels, c.test_labels)
        assert len(c.train) == 10 and len(s.train) == 4
        np.testing.assert_array_equal(c.train[:4], s.train)  # smaller cap = subset of larger
        assert not np.array_equal(f.test, o.test)  # split_seed chooses the split
        assert not (set(row_bytes(f.train)) & set(row_bytes(f.test)))
        assert len(f.test) == round(0.25 * (len(f.train) + len(f.test)))
    # the split of a class does not depend on which other classes are listed
    np.testing.assert_array_equal(load_tasks("digits:classes=5,1", split_seed=3).tasks[1].test,
                                  full.tasks[1].test)
    huge = load_tasks("digits:classes=0", samples_per_task=10_000)
    assert len(huge.tasks[0].train) + len(huge.tasks[0].test) == int((load_digits().target == 0).sum())


def test_subset_seed_draws_a_different_training_subset_of_the_pool_per_seed() -> None:
    full = load_tasks("digits:classes=0,1")
    seeded = [load_tasks("digits:classes=0,1", samples_per_task=10, subset_seed=s) for s in (0, 1)]
    again = load_tasks("digits:classes=0,1", samples_per_task=10, subset_seed=1)
    smaller = load_tasks("digits:classes=0,1", samples_per_task=4, subset_seed=1)
    for i, f in enumerate(full.tasks):
        pool = set(row_bytes(f.train))
        subsets = [set(row_bytes(s.tasks[i].train)) for s in seeded]
        assert subsets[0] != subsets[1]  # the seed is crossed with the subset
        assert all(s <= pool and len(s) == 10 for s in subsets)
        np.testing.assert_array_equal(again.tasks[i].train, seeded[1].tasks[i].train)
        np.testing.assert_array_equal(smaller.tasks[i].train, seeded[1].tasks[i].train[:4])
        np.testing.assert_array_equal(seeded[0].tasks[i].test, f.test)  # held-out split fixed
    uncapped = load_tasks("digits:classes=0,1", subset_seed=5)  # no cap: the whole pool, as before
    np.testing.assert_array_equal(uncapped.tasks[0].train, full.tasks[0].train)
    with pytest.raises(ValueError, match="subset_seed"):
        load_tasks("digits:classes=0,1", samples_per_task=10, subset_seed=-1)


def test_digit_domains_are_transforms_of_disjoint_source_images() -> None:
    task_set = load_tasks("digits:domains=flip,plain,inverted,rot90")
    assert task_set.names == ["flip", "plain", "inverted", "rot90"]
    assert_images(task_set, (1, 8, 8))
    source = load_digits()
    scaled = (source.images / 16.0 * 2 - 1).astype(np.float32)[:, None]
    seen: Counter = Counter()
    for task in task_set.tasks:
        members = np.arange(len(scaled)) % 4 == DIGIT_DOMAINS.index(task.name)
        everything = np.concatenate([task.train, task.test])
        assert row_bytes(everything) == row_bytes(apply_digit_domain(task.name, scaled[members]))
        labels = np.concatenate([task.train_labels, task.test_labels])
        assert Counter(labels.tolist()) == Counter(source.target[members].tolist())
        assert set(labels) == set(range(10))
        seen.update(np.flatnonzero(members).tolist())
    assert max(seen.values()) == 1 and len(seen) == len(scaled)  # disjoint, all used


def test_domain_transforms_pixelwise() -> None:
    image = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) / 15 * 2 - 1
    np.testing.assert_array_equal(apply_digit_domain("plain", image), image)
    np.testing.assert_array_equal(apply_digit_domain("inverted", image), -image)
    np.testing.assert_array_equal(apply_digit_domain("flip", image)[0, 0, :, 0], image[0, 0, :, 3])
    rotated = apply_digit_domain("rot90", image)
    np.testing.assert_array_equal(rotated[0, 0, 0], image[0, 0, :, 3])  # top row = old right column
    assert not np.array_equal(rotated, image)


# ----------------------------------------------------------------------------- npz

def test_npz_round_trip_uint8_and_float(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cats = rng.integers(0, 256, size=(12, 6, 5), dtype=np.uint8)
    dogs = rng.integers(0, 256, size=(9, 6, 5), dtype=np.uint8)
    cats[0, 0, 0], cats[0, 0, 1] = 0, 255
    path = tmp_path / "pets.npz"
    np.savez(path, cats=cats, dogs=dogs)
    task_set = load_tasks(f"npz:{path}", test_fraction=0.25)
    assert task_set.names == ["cats", "dogs"]
    assert_images(task_set, (1, 6, 5))
    cat = task_set.tasks[0]
    assert row_bytes(np.concatenate([cat.train, cat.test])) == \
        row_bytes((cats.astype(np.float32) / 127.5 - 1)[:, None])
    assert np.concatenate([cat.train, cat.test]).min() == -1.0
    assert np.concatenate([cat.train, cat.test]).max() == 1.0
    assert cat.train_labels is None

    colour01 = rng.random((8, 3, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "zero_one.npz", a=colour01, b=colour01[:5])
    loaded = load_tasks(f"npz:{tmp_path / 'zero_one.npz'}")
    assert_images(loaded, (3, 4, 4))
    assert row_bytes(np.concatenate([loaded.tasks[0].train, loaded.tasks[0].test])) == \
        row_bytes(colour01 * 2 - 1)

    symmetric = (rng.random((8, 1, 4, 4)) * 2 - 1).astype(np.float64)
    np.savez(tmp_path / "symmetric.npz", a=symmetric)
    loaded = load_tasks(f"npz:{tmp_path / 'symmetric.npz'}")
    assert row_bytes(np.concatenate([loaded.tasks[0].train, loaded.tasks[0].test])) == \
        row_bytes(symmetric.astype(np.float32))


def npz_error(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError) as error:
        load_tasks(f"npz:{path}")
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


GOOD = np.zeros((5, 8, 8), dtype=np.uint8)


@pytest.mark.parametrize("arrays, needle", [
    ({"cats": np.zeros((10, 5), dtype=np.uint8)},
     "task 'cats' has shape (10, 5) — expected N×H×W or N×C×H×W"),
    ({"cats": np.zeros((4, 8, 8, 3), dtype=np.uint8)}, "has shape (4, 8, 8, 3)"),
    ({"cats": np.zeros((0, 8, 8), dtype=np.uint8)}, "task 'cats' is empty"),
    ({"cats": np.full((4, 8, 8), np.nan, dtype=np.float32)}, "non-finite"),
    ({"cats": np.full((4, 8, 8), 3.0)}, "float values in [3, 3]"),
    ({"cats": np.zeros((4, 8, 8), dtype=np.int64)}, "dtype int64"),
    ({"cats": GOOD, "dogs": np.zeros((5, 8, 9), dtype=np.uint8)}, "task 'dogs' has images of C×H×W"),
    ({"cats": GOOD, "dogs": np.zeros((5, 3, 8, 8), dtype=np.uint8)}, "all tasks must match"),
    ({"cat s": GOOD}, "task name 'cat s' is not allowed"),
    ({"cats": np.zeros((5, 3, 3), dtype=np.uint8)}, "3×3 images"),
    ({"cats": np.zeros((5, 65, 8), dtype=np.uint8)}, "65×8 images"),
    ({"cats": np.zeros((1, 8, 8), dtype=np.uint8)}, "need at least 2"),
])
def test_npz_validation(tmp_path: Path, arrays: dict, needle: str) -> None:
    assert needle in npz_error(tmp_path, **arrays)


def test_npz_file_errors(tmp_path: Path) -> None:
    cases = {}
    cases["missing.npz"] = "file not found"
    (tmp_path / "garbage.npz").write_bytes(b"this is not a zip archive at all")
    cases["garbage.npz"] = "not a readable .npz"
    np.savez(tmp_path / "empty.npz")
    cases["empty.npz"] = "holds no arrays"
    np.save(tmp_path / "single.npy", GOOD)
    cases["single.npy"] = "single array"
    np.savez(tmp_path / "objects.npz", cats=np.array([{"a": 1}], dtype=object))
    cases["objects.npz"] = "cannot be read"
    for name, needle in cases.items():
        with pytest.raises(ValueError) as error:
            load_tasks(f"npz:{tmp_path / name}")
        assert str(error.value).startswith(str(tmp_path / name)) and needle in str(error.value), name


# ----------------------------------------------------------------------------- folder

def write_png(path: Path, pixels: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)


def test_folder_round_trip_gray_and_colour(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    gray = {f"{task}/{i}.png": rng.integers(0, 256, (6, 7), dtype=np.uint8)
            for task in ("b_task", "a-task") for i in range(4)}
    for name, pixels in gray.items():
        write_png(tmp_path / "gray" / name, pixels, "L")
    (tmp_path / "gray" / "a-task" / "notes.txt").write_text("ignored")
    task_set = load_tasks(f"folder:{tmp_path / 'gray'}", test_fraction=0.5)
    assert task_set.names == ["a-task", "b_task"]
    assert_images(task_set, (1, 6, 7))
    for task in task_set.tasks:
        expected = np.stack([p for n, p in gray.items() if n.startswith(task.name)])
        assert row_bytes(np.concatenate([task.train, task.test])) == \
            row_bytes((expected.astype(np.float32) / 127.5 - 1)[:, None])

    colour = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    write_png(tmp_path / "mixed" / "x" / "0.png", colour, "RGB")
    write_png(tmp_path / "mixed" / "x" / "1.png", colour, "RGB")
    write_png(tmp_path / "mixed" / "y" / "0.png", colour[..., 0], "L")
    write_png(tmp_path / "mixed" / "y" / "1.png", colour[..., 0], "L")
    mixed = load_tasks(f"folder:{tmp_path / 'mixed'}")
    assert_images(mixed, (3, 5, 5))
    np.testing.assert_array_equal(mixed.tasks[0].test[0], colour.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1)
    gray_as_rgb = mixed.tasks[1].test[0]
    np.testing.assert_array_equal(gray_as_rgb[0], gray_as_rgb[2])  # L -> RGB repeats the channel


def test_folder_errors(tmp_path: Path) -> None:
    pixels = np.zeros((8, 8), dtype=np.uint8)
    (tmp_path / "nosub").mkdir()
    write_png(tmp_path / "emptytask" / "a" / "0.png", pixels, "L")
    (tmp_path / "emptytask" / "b").mkdir()
    write_png(tmp_path / "sizes" / "a" / "0.png", pixels, "L")
    write_png(tmp_path / "sizes" / "b" / "0.png", pixels, "L")
    write_png(tmp_path / "sizes" / "b" / "1.png", np.zeros((8, 9), dtype=np.uint8), "L")
    write_png(tmp_path / "badname" / "a b" / "0.png", pixels, "L")
    write_png(tmp_path / "broken" / "a" / "0.png", pixels, "L")
    (tmp_path / "broken" / "a" / "1.png").write_bytes(b"not a png")
    write_png(tmp_path / "tiny" / "a" / "0.png", np.zeros((3, 3), dtype=np.uint8), "L")
    write_png(tmp_path / "tiny" / "a" / "1.png", np.zeros((3, 3), dtype=np.uint8), "L")
    cases = {
        "missing": "folder not found",
        "nosub": "no task subfolders",
        "emptytask": "task 'b' has no .png/.jpg/.jpeg images",
        "sizes": "'b/1.png' is 9×8 (W×H), but 'a/0.png' is 8×8",
        "badname": "task name 'a b' is not allowed",
        "broken": "'a/1.png' is not a readable image",
        "tiny": "'a/0.png' is 3×3 (W×H) — expected 4×4",
    }
    for name, needle in cases.items():
        with pytest.raises(ValueError) as error:
            load_tasks(f"folder:{tmp_path / name}")
        message = str(error.value)
        assert message.startswith(str(tmp_path / name)) and needle in message, (name, message)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width×height 8-bit grayscale but carries no pixel data at all: decoding
    it fails, so an error about its size proves the size was read from the header first."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))


def test_folder_sizes_come_from_headers_and_bombs_are_one_line(tmp_path: Path) -> None:
    png_header_only(tmp_path / "huge" / "a" / "0.png", 8000, 8000)
    png_header_only(tmp_path / "bomb" / "a" / "0.png", 100_000, 100_000)  # 10^10 pixels
    cases = {"huge": "'a/0.png' is 8000×8000 (W×H) — expected 4×4 .. 64×64",
             "bomb": "'a/0.png' declares more pixels than PIL will decode"}
    for name, needle in cases.items():
        with pytest.raises(ValueError) as error:
            load_tasks(f"folder:{tmp_path / name}")
        message = str(error.value)
        assert message.startswith(str(tmp_path / name)) and needle in message and "\n" not in message


def test_npz_declared_size_is_checked_before_reading(tmp_path: Path) -> None:
    # A member whose .npy header declares 60 GiB of uint8 followed by no data: a few bytes on
    # disk. Reading it would be a MemoryError (or worse, swap); the header alone must refuse it.
    path = tmp_path / "huge.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (15_728_640, 64, 64)})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cats.npy", header.getvalue())  # magic + header, no data
    with pytest.raises(ValueError) as error:
        load_tasks(f"npz:{path}")
    message = str(error.value)
    assert message.startswith(f"{path}: task 'cats' declares shape (15728640, 64, 64) of uint8 (60 GiB)")
    assert "available memory" in message and "\n" not in message


# ----------------------------------------------------------------------------- shapes

def test_shapes_shapes_determinism_and_speed() -> None:
    task_set = load_tasks("shapes:tasks=3,relatedness=0.5,size=12,n=40")
    assert task_set.names == ["t0", "t1", "t2"]
    assert_images(task_set, (1, 12, 12))
    assert [len(t.train) + len(t.test) for t in task_set.tasks] == [40, 40, 40]
    assert task_set.fingerprint() == load_tasks("shapes:tasks=3,relatedness=0.5,size=12,n=40").fingerprint()
    other_seed = load_tasks("shapes:tasks=3,relatedness=0.5,size=12,n=40,seed=1")
    assert other_seed.fingerprint() != task_set.fingerprint()
    # the images themselves do not depend on split_seed, only the split does
    resplit = load_tasks("shapes:tasks=3,relatedness=0.5,size=12,n=40", split_seed=9)
    for a, b in zip(task_set.tasks, resplit.tasks):
        assert row_bytes(np.concatenate([a.train, a.test])) == row_bytes(np.concatenate([b.train, b.test]))
        assert not np.array_equal(a.test, b.test)
    foreground = np.concatenate([t.train for t in task_set.tasks]) > -0.9
    assert 0.02 < foreground.mean() < 0.8  # shapes are drawn, not blank or full


def test_shape_parameter_ranges_encode_relatedness() -> None:
    for name, (low, high) in SHAPE_PARAMETERS.items():
        unrelated = shape_parameter_ranges(4, 0.0)[name]
        assert np.all(unrelated[1:, 0] >= unrelated[:-1, 1] - 1e-12)  # disjoint slices
        identical = shape_parameter_ranges(4, 1.0)[name]
        np.testing.assert_allclose(identical, np.tile([low, high], (4, 1)))
        overlaps = []
        for relatedness in (0.0, 0.3, 0.6, 0.9):
            ranges = shape_parameter_ranges(4, relatedness)[name]
            overlaps.append(min(ranges[0, 1], ranges[3, 1]) - max(ranges[0, 0], ranges[3, 0]))
        assert overlaps == sorted(overlaps) and overlaps[0] < 0 < overlaps[-1]


def mean_image_distance(relatedness: float) -> float:
    task_set = load_tasks(f"shapes:tasks=4,relatedness={relatedness},n=300")
    means = [np.concatenate([t.train, t.test]).mean(axis=0).ravel() for t in task_set.tasks]
    return float(np.mean([np.linalg.norm(a - b) for i, a in enumerate(means) for b in means[i + 1:]]))


def test_shapes_task_distance_shrinks_with_relatedness() -> None:
    distances = [mean_image_distance(r) for r in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert distances == sorted(distances, reverse=True), distances
    assert distances[-1] < 0.25 * distances[0], distances


# ----------------------------------------------------------------------------- fingerprint

def test_fingerprint_tracks_content_not_spec(tmp_path: Path) -> None:
    digits = load_tasks("digits:classes=0,1")
    assert digits.fingerprint() == load_tasks("digits:classes=0,1;").fingerprint()
    assert len(digits.fingerprint()) == 64
    assert digits.fingerprint() != load_tasks("digits:classes=0,1", samples_per_task=20).fingerprint()
    assert digits.fingerprint() != load_tasks("digits:classes=1,0").fingerprint()

    rng = np.random.default_rng(2)
    arrays = {"a": rng.integers(0, 256, (6, 5, 5), dtype=np.uint8),
              "b": rng.integers(0, 256, (6, 5, 5), dtype=np.uint8)}
    np.savez(tmp_path / "one.npz", **arrays)
    np.savez(tmp_path / "two.npz", **arrays)
    one, two = load_tasks(f"npz:{tmp_path / 'one.npz'}"), load_tasks(f"npz:{tmp_path / 'two.npz'}")
    assert one.spec != two.spec and one.fingerprint() == two.fingerprint()
    arrays["b"][3, 2, 2] ^= 1  # one pixel, one grey level
    np.savez(tmp_path / "two.npz", **arrays)
    assert load_tasks(f"npz:{tmp_path / 'two.npz'}").fingerprint() != one.fingerprint()
