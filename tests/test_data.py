"""Tests for tp_keras.run.data: raw IDX / CIFAR files, splits, tfds (mocked), offline errors, student-teacher."""
import gzip
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import fixture_data
from tp_keras.run import data
from tp_keras.run.data import DataError, load_dataset

N_TRAIN, N_TEST, N_VAL = 60, 20, 10
TEST_OFFSET = 100  # test image i has signature pixel TEST_OFFSET + i
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _mnist_images(n, offset):
    """Random 28x28 uint8 images; pixel (0, 0) of image i is offset + i (a unique signature), (27, 27) is 255."""
    images = np.random.default_rng(offset).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(offset, offset + n)
    images[:, 27, 27] = 255
    return images


TRAIN_IMAGES, TEST_IMAGES = _mnist_images(N_TRAIN, 0), _mnist_images(N_TEST, TEST_OFFSET)
TRAIN_LABELS, TEST_LABELS = np.arange(N_TRAIN) % 10, (np.arange(N_TEST) + 3) % 10


def _write_idx_set(folder, gz=True, train_images=TRAIN_IMAGES, train_labels=TRAIN_LABELS):
    os.makedirs(folder, exist_ok=True)
    ext = ".gz" if gz else ""
    fixture_data.write_idx_images(os.path.join(folder, IDX_NAMES[0] + ext), train_images)
    fixture_data.write_idx_labels(os.path.join(folder, IDX_NAMES[1] + ext), train_labels)
    fixture_data.write_idx_images(os.path.join(folder, IDX_NAMES[2] + ext), TEST_IMAGES)
    fixture_data.write_idx_labels(os.path.join(folder, IDX_NAMES[3] + ext), TEST_LABELS)
    return str(folder)


@pytest.fixture
def idx_dir(tmp_path):
    return _write_idx_set(tmp_path)


def _mnist_expected(images):
    """torchvision's float32 ToTensor + Normalize((0.1307,), (0.3081,)), flattened."""
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
    return (x - np.float32(0.1307)) / np.float32(0.3081)


def _signatures(x, name="fashion_mnist"):
    """Recovers each sample's pixel-(0, 0) signature from preprocessed flattened data."""
    v = x[:, 0].astype(np.float64)
    if name == "mnist":
        v = v * 0.3081 + 0.1307
    return np.rint(v * 255).astype(int)


# ---------------------------------------------------------------------------------------------------------------
# IDX files.


def test_mnist_idx_flat_shapes_scaling_labels(idx_dir):
    ds = load_dataset("mnist", idx_dir, validation_size=N_VAL)
    assert ds.name == "mnist" and ds.task == "classification" and ds.num_outputs == 10
    assert ds.image_shape == (28, 28, 1)
    assert ds.train.x.shape == (N_TRAIN - N_VAL, 784) and ds.val.x.shape == (N_VAL, 784)
    assert ds.test.x.shape == (N_TEST, 784)
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int32
        assert split.x.flags["C_CONTIGUOUS"]
    # The test set is the official one, in order, preprocessed exactly as torchvision does in float32.
    np.testing.assert_array_equal(ds.test.x, _mnist_expected(TEST_IMAGES))
    np.testing.assert_array_equal(ds.test.y, TEST_LABELS)
    v = int(TEST_IMAGES[4, 3, 5])  # row-major flattening: pixel (3, 5) is value 3 * 28 + 5
    assert ds.test.x[4, 3 * 28 + 5] == pytest.approx((v / 255 - 0.1307) / 0.3081, rel=1e-6)
    assert ds.test.x[0, 783] == pytest.approx((1 - 0.1307) / 0.3081, rel=1e-6)
    # Labels follow their images through the split.
    np.testing.assert_array_equal(ds.train.y, TRAIN_LABELS[_signatures(ds.train.x, "mnist")])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mnist_idx_unflattened_and_dtype(idx_dir, dtype):
    ds = load_dataset("mnist", idx_dir, validation_size=N_VAL, flatten=False, dtype=dtype)
    assert ds.train.x.shape == (N_TRAIN - N_VAL, 28, 28, 1) and ds.val.x.shape == (N_VAL, 28, 28, 1)
    assert ds.test.x.shape == (N_TEST, 28, 28, 1)
    assert ds.train.x.dtype == ds.val.x.dtype == ds.test.x.dtype == np.dtype(dtype)
    assert ds.test.y.dtype == np.int32
    # float64 is the float32 result cast at the end, not a float64 recomputation.
    np.testing.assert_array_equal(ds.test.x.reshape(N_TEST, -1), _mnist_expected(TEST_IMAGES).astype(dtype))


def test_fashion_mnist_scaled_only_from_raw_subfolder_uncompressed(tmp_path):
    _write_idx_set(tmp_path / "fashion_mnist" / "raw", gz=False)
    ds = load_dataset("fashion_mnist", str(tmp_path), validation_size=N_VAL)
    expected = TEST_IMAGES.reshape(N_TEST, -1).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(ds.test.x, expected)
    assert ds.test.x[0, 783] == 1.0 and ds.test.x.min() >= 0.0
    assert ds.test.x[7, 0] == pytest.approx((TEST_OFFSET + 7) / 255)


def test_idx_in_name_subfolder(tmp_path):
    _write_idx_set(tmp_path / "mnist")
    assert load_dataset("mnist", str(tmp_path), validation_size=N_VAL).test.x.shape == (N_TEST, 784)


def test_split_partition_and_determinism(idx_dir):
    ds = load_dataset("fashion_mnist", idx_dir, validation_size=N_VAL, seed=3)
    train_sig, val_sig = _signatures(ds.train.x), _signatures(ds.val.x)
    assert len(train_sig) == N_TRAIN - N_VAL and len(val_sig) == N_VAL
    # No sample lost or duplicated; the test set is untouched.
    np.testing.assert_array_equal(np.sort(np.concatenate([train_sig, val_sig])), np.arange(N_TRAIN))
    np.testing.assert_array_equal(_signatures(ds.test.x), np.arange(TEST_OFFSET, TEST_OFFSET + N_TEST))
    # The documented rule: val = first validation_size of default_rng(seed).permutation, both kept sorted.
    perm = np.random.default_rng(3).permutation(N_TRAIN)
    np.testing.assert_array_equal(val_sig, np.sort(perm[:N_VAL]))
    np.testing.assert_array_equal(train_sig, np.sort(perm[N_VAL:]))

    again = load_dataset("fashion_mnist", idx_dir, validation_size=N_VAL, seed=3)
    np.testing.assert_array_equal(again.train.x, ds.train.x)
    np.testing.assert_array_equal(again.val.y, ds.val.y)
    other = load_dataset("fashion_mnist", idx_dir, validation_size=N_VAL, seed=4)
    assert not np.array_equal(_signatures(other.val.x), val_sig)


def test_no_val_set_is_whole_train_in_order(idx_dir):
    ds = load_dataset("fashion_mnist", idx_dir, no_val_set=True)
    assert ds.val is None
    np.testing.assert_array_equal(_signatures(ds.train.x), np.arange(N_TRAIN))
    np.testing.assert_array_equal(ds.train.y, TRAIN_LABELS)


def test_validation_size_too_large(idx_dir):
    with pytest.raises(DataError, match="validation_size"):
        load_dataset("mnist", idx_dir)  # 5000 > 60


def _corrupt_magic(path):
    with gzip.open(path, "rb") as f:
        raw = bytearray(f.read())
    raw[3] = 0x02
    with gzip.open(path, "wb") as f:
        f.write(bytes(raw))


def _truncate(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-100])


@pytest.mark.parametrize("name, damage, says", [
    ("t10k-images-idx3-ubyte.gz", _corrupt_magic, "is not an IDX image file (magic 0x00000802"),
    ("train-images-idx3-ubyte.gz", _truncate, "is truncated or corrupt: header says"),
    ("t10k-labels-idx1-ubyte.gz", os.remove, "but not t10k-labels-idx1-ubyte[.gz]; put all four IDX files in one"),
])
def test_a_damaged_or_missing_idx_file_is_one_line_naming_it(idx_dir, name, damage, says):
    damage(os.path.join(idx_dir, name))
    with pytest.raises(DataError) as err:
        load_dataset("mnist", idx_dir, validation_size=N_VAL)
    assert name.split(".")[0] in str(err.value) and says in str(err.value) and "\n" not in str(err.value)


def _cut_stream(path):
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[:len(raw) // 2])


def _not_gzip(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:  # the IDX bytes themselves under a .gz name
        f.write(raw)


@pytest.mark.parametrize("damage, says", [(_cut_stream, "Compressed file ended"), (_not_gzip, "Not a gzipped file")])
def test_a_damaged_gzip_stream_is_one_line_naming_the_file(idx_dir, damage, says):
    path = os.path.join(idx_dir, "train-images-idx3-ubyte.gz")
    damage(path)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", idx_dir, validation_size=N_VAL)
    assert str(err.value).startswith(f"cannot read {path}: ") and says in str(err.value)
    assert "\n" not in str(err.value)


def test_a_gzip_file_of_several_members_reads_as_their_concatenation(idx_dir):
    """gzip's format allows several members in one file (e.g. written by `cat a.gz b.gz`); they decode as one."""
    path = os.path.join(idx_dir, "train-images-idx3-ubyte.gz")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    np.testing.assert_array_equal(data.read_idx_images(path), TRAIN_IMAGES)


def test_loading_in_background_gives_load_datasets_result_or_its_error_in_the_caller(idx_dir, tmp_path):
    options = dict(seed=3, validation_size=N_VAL, flatten=False, dtype="float64")
    background = data.load_dataset_in_background("mnist", idx_dir, **options)()
    direct = load_dataset("mnist", idx_dir, **options)
    assert background.fingerprint == direct.fingerprint
    for name in ("train", "val", "test"):
        for part in ("x", "y"):
            a, b = getattr(getattr(background, name), part), getattr(getattr(direct, name), part)
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
    waiting = data.load_dataset_in_background("mnist", str(tmp_path / "empty_folder_that_is_missing"))
    with pytest.raises(DataError, match="does not exist"):
        waiting()


def test_idx_count_mismatch(tmp_path):
    folder = _write_idx_set(tmp_path, train_labels=TRAIN_LABELS[:-1])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz") as err:
        load_dataset("mnist", folder, validation_size=N_VAL)
    assert "train-images-idx3-ubyte.gz" in str(err.value)


@pytest.mark.slow
def test_raw_path_does_not_import_tfds(idx_dir):
    code = (
        "import sys; from tp_keras.run.data import load_dataset; "
        f"load_dataset('mnist', {idx_dir!r}, validation_size={N_VAL}); "
        "assert 'tensorflow_datasets' not in sys.modules"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)


# ---------------------------------------------------------------------------------------------------------------
# CIFAR-10 python batches.

CIFAR_PER_BATCH, CIFAR_TEST, CIFAR_TEST_FIRST = 12, 10, 70  # sample indices stay < 100: planes fit uint8


def _cifar_batch(first, n):
    """Sample k (global index first + k) has constant planes r = k', g = 100 + k', b = 255 - k' (k' = first + k)."""
    idx = np.arange(first, first + n)
    planes = np.stack([idx, 100 + idx, 255 - idx], axis=1).astype(np.uint8)  # (n, 3)
    return np.repeat(planes, 1024, axis=1), (idx * 7) % 10  # CHW rows: 1024 red, 1024 green, 1024 blue


def _cifar_expected_planes(idx):
    rgb = np.stack([idx, 100 + idx, 255 - idx], axis=1).astype(np.float32)
    return (rgb / np.float32(255) - np.float32(0.5)) / np.float32(0.5)


@pytest.fixture(params=["folder", "tarball", "data_dir_is_folder"])
def cifar_dir(request, tmp_path):
    train = [_cifar_batch(i * CIFAR_PER_BATCH, CIFAR_PER_BATCH) for i in range(5)]
    written = fixture_data.write_cifar_batches(tmp_path, train, _cifar_batch(CIFAR_TEST_FIRST, CIFAR_TEST),
                                               as_tarball=request.param == "tarball")
    if request.param == "tarball":
        assert os.listdir(tmp_path) == ["cifar-10-python.tar.gz"]
    return written if request.param == "data_dir_is_folder" else str(tmp_path)


def test_cifar_raw_flat_chw_order_and_scaling(cifar_dir):
    ds = load_dataset("cifar10", cifar_dir, validation_size=6, seed=1)
    n_train = 5 * CIFAR_PER_BATCH
    assert ds.image_shape == (32, 32, 3) and ds.num_outputs == 10
    assert ds.train.x.shape == (n_train - 6, 3072) and ds.val.x.shape == (6, 3072)
    assert ds.test.x.shape == (CIFAR_TEST, 3072) and ds.test.y.dtype == np.int32
    test_idx = np.arange(CIFAR_TEST_FIRST, CIFAR_TEST_FIRST + CIFAR_TEST)
    planes = _cifar_expected_planes(test_idx)
    for c in range(3):  # channel-major: all 1024 red values, then green, then blue
        np.testing.assert_array_equal(ds.test.x[:, c * 1024:(c + 1) * 1024], np.repeat(planes[:, c:c + 1], 1024, 1))
    np.testing.assert_array_equal(ds.test.y, (test_idx * 7) % 10)
    # Sample 0 has red 0 -> -1 and blue 255 -> +1: scaled to [-1, 1].
    all_x = np.concatenate([ds.train.x, ds.val.x])
    assert all_x.min() == -1.0 and all_x.max() == 1.0
    # Split: red plane recovers the sample index; nothing lost or duplicated, labels follow.
    sig = np.rint((all_x[:, 0] * 0.5 + 0.5) * 255).astype(int)
    np.testing.assert_array_equal(np.sort(sig), np.arange(n_train))
    np.testing.assert_array_equal(np.concatenate([ds.train.y, ds.val.y]), (sig * 7) % 10)


def test_cifar_raw_unflattened_nhwc(cifar_dir):
    ds = load_dataset("cifar10", cifar_dir, no_val_set=True, flatten=False, dtype="float64")
    assert ds.val is None and ds.train.x.shape == (5 * CIFAR_PER_BATCH, 32, 32, 3)
    assert ds.test.x.shape == (CIFAR_TEST, 32, 32, 3) and ds.test.x.dtype == np.float64
    assert ds.train.x.flags["C_CONTIGUOUS"]
    planes = _cifar_expected_planes(np.arange(5 * CIFAR_PER_BATCH)).astype(np.float64)
    np.testing.assert_array_equal(ds.train.x, np.broadcast_to(planes[:, None, None, :], ds.train.x.shape))


def test_cifar_missing_batch(tmp_path):
    folder = fixture_data.write_cifar_batches(tmp_path, [_cifar_batch(0, 2)] * 4, _cifar_batch(0, 2))
    with pytest.raises(DataError, match="data_batch_5"):
        load_dataset("cifar10", str(tmp_path))
    assert folder.endswith("cifar-10-batches-py")


# ---------------------------------------------------------------------------------------------------------------
# tensorflow-datasets (mocked) and the offline failure.


def _no_network(host, port, timeout=None):
    raise AssertionError(f"network check for {host}:{port} should not happen")


@pytest.mark.slow
@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_mock(tmp_path, monkeypatch, name, shape):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(data, "_host_reachable", _no_network)
    with tfds.testing.mock_data(num_examples=20):
        ds = load_dataset(name, str(tmp_path), validation_size=5)
        images = load_dataset(name, str(tmp_path), no_val_set=True, flatten=False, dtype="float64")
    size = int(np.prod(shape))
    assert ds.train.x.shape == (15, size) and ds.val.x.shape == (5, size) and ds.test.x.shape == (20, size)
    assert ds.image_shape == shape and ds.train.y.dtype == np.int32 and ds.train.x.dtype == np.float32
    assert ds.train.y.min() >= 0 and ds.train.y.max() < 10
    assert images.val is None and images.train.x.shape == (20, *shape) and images.train.x.dtype == np.float64
    if name == "cifar10":
        assert images.train.x.min() >= -1 and images.train.x.max() <= 1


@pytest.mark.parametrize("name,file_name", [("fashion_mnist", "train-images-idx3-ubyte.gz"),
                                            ("cifar10", "cifar-10-python.tar.gz")])
def test_offline_without_data_fails_fast(tmp_path, monkeypatch, name, file_name):
    pytest.importorskip("tensorflow_datasets")
    checked = []
    monkeypatch.setattr(data, "_host_reachable", lambda host, port, timeout=None: checked.append(host) or False)
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_dataset(name, str(tmp_path))
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert "\n" not in message and "--data_dir" in message and file_name in message and str(tmp_path) in message
    assert checked == [data._DOWNLOAD_HOSTS[name][0]]


def test_offline_with_stray_tfds_folder(tmp_path, monkeypatch):
    """An empty tfds variant folder (e.g. an aborted download) is 'not prepared', not a KeyError traceback."""
    pytest.importorskip("tensorflow_datasets")
    (tmp_path / "mnist" / "3.0.1").mkdir(parents=True)
    monkeypatch.setattr(data, "_host_reachable", lambda host, port, timeout=None: False)
    with pytest.raises(DataError, match="cannot download"):
        load_dataset("mnist", str(tmp_path))


def test_network_check_is_bounded(monkeypatch):
    assert data._NETWORK_TIMEOUT_S <= 5
    # A reserved, never-resolvable name: fails (quickly) without network access.
    start = time.monotonic()
    assert data._host_reachable("tp-keras-test.invalid", 80, timeout=2.0) is False
    assert time.monotonic() - start < 3
    # A connection attempt that hangs (e.g. DNS offline) is abandoned after the timeout.
    def hanging_connection(*args, **kwargs):
        time.sleep(2)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hanging_connection)
    start = time.monotonic()
    assert data._host_reachable("example.com", 443, timeout=0.3) is False
    assert time.monotonic() - start < 1.5


def test_missing_data_dir(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(DataError, match="--data_dir=.*nope does not exist"):
        load_dataset("mnist", missing)


def test_unknown_dataset():
    with pytest.raises(DataError, match="--dataset") as err:
        load_dataset("imagenet")
    for name in data.DATASETS:
        assert name in str(err.value)
    assert isinstance(err.value, ValueError)


# ---------------------------------------------------------------------------------------------------------------
# Student-teacher regression.


def test_student_teacher_shapes_and_determinism():
    ds = load_dataset("student_teacher", seed=5)
    assert ds.task == "regression" and ds.num_outputs == 2 and ds.image_shape == (6,)
    assert ds.train.x.shape == (400, 6) and ds.test.x.shape == (200, 6) and ds.val.x.shape == (1000, 6)
    assert ds.train.y.shape == (400, 2) and ds.test.y.shape == (200, 2) and ds.val.y.shape == (1000, 2)
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == split.y.dtype == np.float32
        assert split.x.min() >= -1 and split.x.max() <= 1
    again = load_dataset("student_teacher", seed=5, validation_size=17)  # validation_size is ignored
    for a, b in ((ds.train, again.train), (ds.val, again.val), (ds.test, again.test)):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
    other = load_dataset("student_teacher", seed=6)
    assert not np.array_equal(other.train.x, ds.train.x) and not np.array_equal(other.train.y, ds.train.y)
    no_val = load_dataset("student_teacher", seed=5, no_val_set=True, dtype="float64")
    assert no_val.val is None and no_val.train.y.dtype == np.float64
    np.testing.assert_allclose(no_val.train.y, ds.train.y, rtol=1e-5, atol=1e-5)


def test_student_teacher_targets_are_the_teacher():
    seed, hidden = 11, (7, 5)
    ds = data.make_student_teacher(seed, num_train=30, num_test=8, num_val=9, teacher_hidden=hidden,
                                   dtype="float64")
    # Re-derive the teacher following the documented draw order: weights layer by layer, then the inputs.
    rng = np.random.default_rng(seed)
    sizes = (6, *hidden, 2)
    weights = [rng.standard_normal((i, o)) * 3.0 * np.sqrt(2.0 / (i + o)) for i, o in zip(sizes[:-1], sizes[1:])]

    def teacher(x):
        for w in weights[:-1]:
            x = np.maximum(x @ w, 0.0)
        return x @ weights[-1]

    for split, n in ((ds.train, 30), (ds.test, 8), (ds.val, 9)):
        np.testing.assert_array_equal(split.x, rng.uniform(-1, 1, (n, 6)))
        np.testing.assert_allclose(split.y, teacher(split.x), rtol=1e-12, atol=1e-12)
