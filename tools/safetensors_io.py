"""safetensors_io.py — minimal safetensors reader/writer for the Python side
(reference generators, PyTorch peer, exports), so no PyPI package is needed.
Tensors are numpy arrays or torch tensors; F32, F16 and BF16 are supported."""
import json
import struct

import numpy as np

_DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2)}


def _to_numpy(t):
    if hasattr(t, "detach"):  # a torch tensor
        t = t.detach().cpu().float().contiguous().numpy()
    return np.ascontiguousarray(t, dtype=np.float32)


def _f32_to_bf16_bits(a):
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def save(path, tensors, metadata=None, dtype="F32"):
    """Writes {name: array} to path; metadata values are converted to str."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        a = _to_numpy(t)
        if dtype == "F32":
            raw = a.astype("<f4").tobytes()
        elif dtype == "F16":
            raw = a.astype("<f2").tobytes()
        elif dtype == "BF16":
            raw = _f32_to_bf16_bits(a).astype("<u2").tobytes()
        else:
            raise ValueError(f"unknown dtype {dtype}")
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load(path):
    """Returns ({name: float32 numpy array}, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        dt, _ = _DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        a = np.frombuffer(data[base + b : base + e], dtype=np.dtype(dt).newbyteorder("<"))
        if info["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a.astype(np.float32).reshape(info["shape"])
    return out, meta
