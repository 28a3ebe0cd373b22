"""Writers of the raw dataset formats that tp_keras.run.data reads (IDX files, CIFAR-10 python batches): the tests
fabricate tiny datasets with them. tests/ is on sys.path (`from fixture_data import write_idx_images`)."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np

from tp_keras.run.data import _CIFAR_FOLDER, _CIFAR_TARBALL, _CIFAR_TEST_BATCH, _IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC


def _write_bytes(path, header: bytes, payload: np.ndarray) -> None:
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(payload, dtype=np.uint8).tobytes())


def write_idx_images(path, images_uint8) -> None:
    """Writes uint8 images (n, rows, cols) or (n, rows, cols, 1) as an IDX3 file, gzipped if path ends in .gz."""
    images = np.asarray(images_uint8)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"images must be (n, rows, cols), got shape {images.shape}")
    _write_bytes(path, struct.pack(">IIII", _IDX_IMAGES_MAGIC, *images.shape), images)


def write_idx_labels(path, labels_uint8) -> None:
    """Writes uint8 labels (n,) as an IDX1 file, gzipped if path ends in .gz."""
    labels = np.asarray(labels_uint8).reshape(-1)
    _write_bytes(path, struct.pack(">II", _IDX_LABELS_MAGIC, len(labels)), labels)


def write_cifar_batches(folder, train_batches, test_batch, *, as_tarball: bool = False) -> str:
    """Writes CIFAR-10 python batches; returns the path written.

    Args:
      folder: parent folder (created if needed).
      train_batches: list of ``(data, labels)``, data uint8 ``(N, 3072)`` in CHW order (red plane first); written as
        ``data_batch_1``, ``data_batch_2``, ... (the loader needs five).
      test_batch: ``(data, labels)`` for ``test_batch``.
      as_tarball: write ``folder/cifar-10-python.tar.gz`` (members under ``cifar-10-batches-py/``) instead of the
        extracted ``folder/cifar-10-batches-py/``.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    named = [(f"data_batch_{i}", b) for i, b in enumerate(train_batches, 1)] + [(_CIFAR_TEST_BATCH, test_batch)]
    blobs = {}
    for batch_name, (data, labels) in named:
        data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1, 3072)
        labels = [int(v) for v in np.asarray(labels).reshape(-1)]
        blobs[batch_name] = pickle.dumps(
            {
                b"batch_label": batch_name.encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [f"{batch_name}_{i}.png".encode() for i in range(len(data))],
            },
            protocol=2,
        )
    if as_tarball:
        path = os.path.join(folder, _CIFAR_TARBALL)
        with tarfile.open(path, "w:gz") as tar:
            for batch_name, blob in blobs.items():
                info = tarfile.TarInfo(f"{_CIFAR_FOLDER}/{batch_name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
        return path
    path = os.path.join(folder, _CIFAR_FOLDER)
    os.makedirs(path, exist_ok=True)
    for batch_name, blob in blobs.items():
        with open(os.path.join(path, batch_name), "wb") as f:
            f.write(blob)
    return path
