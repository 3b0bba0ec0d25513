"""Writers of small files in each recorded dataset's published on-disk format. They encode events
independently of the readers under test, from the formats' published descriptions: N-MNIST's 5-byte
events, the Heidelberg HDF5 keys, tonic's .npy columns, AER-DAT 2.0."""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np


def nmnist_bytes(x, y, p, t) -> bytes:
    """N-MNIST: per event x, y (a byte each), p in bit 7 and t (us) in 23 bits, big-endian. Times
    past 2^23 - 1 are not needed by these tests."""
    x, y, p, t = (np.asarray(v, dtype=np.int64) for v in (x, y, p, t))
    assert t.max(initial=0) < 2**23
    raw = np.zeros((len(x), 5), dtype=np.uint8)
    raw[:, 0], raw[:, 1] = x, y
    raw[:, 2] = (p << 7) | (t >> 16)
    raw[:, 3], raw[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    return raw.tobytes()


def write_heidelberg(path: Path, samples: list[tuple[np.ndarray, np.ndarray]], labels) -> None:
    """An SHD/SSC HDF5 file: spikes/times (s, float) and spikes/units (uint16) ragged per sample,
    labels (uint16), extra/keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        times = h5.create_dataset("spikes/times", (len(samples),), dtype=h5py.vlen_dtype(np.float32))
        units = h5.create_dataset("spikes/units", (len(samples),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (t, u) in enumerate(samples):
            times[i], units[i] = np.asarray(t, np.float32), np.asarray(u, np.uint16)
        h5.create_dataset("labels", data=np.asarray(labels, np.uint16))
        h5.create_dataset("extra/keys", data=np.array([b"k"] * 20))


def aedat2_bytes(x, y, p, t) -> bytes:
    """AER-DAT 2.0 as CIFAR10-DVS holds it: '#' header lines ending in CRLF, then per event a
    big-endian uint32 address (y' in bits 1-7, x' in bits 8-14, p' in bit 0) and uint32 time (us);
    the stored x' = 127 - x, y' = 127 - y, p' = 1 - p (the camera mounted upside down)."""
    x, y, p = (np.asarray(v, dtype=np.uint32) for v in (x, y, p))
    address = ((127 - x) << 8) | ((127 - y) << 1) | (1 - p)
    body = np.empty(2 * len(address), dtype=">u4")
    body[0::2], body[1::2] = address, np.asarray(t, dtype=np.uint32)
    header = b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n# End of ASCII Header\r\n"
    return header + body.tobytes()


def npy_bytes(columns: list) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.stack([np.asarray(c) for c in columns], axis=1))
    return buffer.getvalue()
