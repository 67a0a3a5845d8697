"""Plain data between the grader and a submission's sandbox: what may cross, and how it is framed.

The grader never lets a submission hand it an object. A check's inputs go to the submission's process and its
function's answer comes back as *plain data*: ``None``, booleans, integers, floats, strings, lists, tuples and
dicts of those, and arrays rebuilt from their raw bytes, dtype and shape (``torch.Tensor``, ``numpy.ndarray``,
``pandas.DataFrame``/``Series`` of such columns). Nothing else crosses: no pickle, no class, no code, no
subclass. :func:`decode` builds *new* objects of the base types only, so whatever the student's object did
(a ``Tensor`` subclass whose ``__torch_function__`` answers ``True`` to ``allclose``, an ``__eq__`` that always
agrees) stays in the student's process.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON (NaN and infinities allowed), at most
:data:`MAX_FRAME` bytes; arrays travel as base64 text. Anything else, or anything deeper than :data:`MAX_DEPTH`,
is a :class:`WireError`.
"""
from __future__ import annotations

import base64
import json
import math
import os
import select
import struct
import sys
import time
from typing import Any, Optional

__all__ = ["MAX_DEPTH", "MAX_FRAME", "WireError", "decode", "encode", "read_frame", "write_frame"]

MAX_FRAME = 64 * 2 ** 20          # bytes of one frame: far above any check's inputs or answers
MAX_DEPTH = 32                    # nesting of lists, tuples and dicts
_TORCH_DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64",
                 "complex64", "complex128")
_NUMPY_DTYPES = ("bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float16",
                 "float32", "float64", "complex64", "complex128")


class WireError(ValueError):
    """Something that is not plain data, or a frame that breaks the format."""


# ----------------------------------------------------------------------------------------------- encode

def encode(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-ready plain data; :class:`WireError` for anything else (an object, a function, ...)."""
    if depth > MAX_DEPTH:
        raise WireError(f"nested deeper than {MAX_DEPTH} levels")
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (list, tuple)):
        return {"T": "tuple" if isinstance(value, tuple) else "list",
                "v": [encode(v, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"T": "dict", "v": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    torch, numpy, pandas = (sys.modules.get(name) for name in ("torch", "numpy", "pandas"))
    if torch is not None and isinstance(value, (torch.Tensor, torch.dtype)):
        return _encode_torch(value)
    if numpy is not None and isinstance(value, (numpy.generic, numpy.ndarray, numpy.dtype)):
        return _encode_numpy(value, depth)
    if pandas is not None and isinstance(value, (pandas.DataFrame, pandas.Series)):
        return _encode_pandas(value, depth)
    raise WireError(f"cannot send a {type(value).__name__}: only numbers, strings, lists, tuples, dicts, "
                    "tensors, arrays and data frames")


def _encode_torch(value) -> dict:
    import torch
    if not isinstance(value, torch.Tensor):
        if isinstance(value, torch.dtype):
            return {"T": "torch_dtype", "v": str(value).split(".")[-1]}
        raise WireError(f"cannot send a {type(value).__name__}")
    tensor = torch.Tensor.detach(value).to("cpu").resolve_conj().resolve_neg().contiguous()
    dtype = str(tensor.dtype).split(".")[-1]
    if dtype not in _TORCH_DTYPES:
        raise WireError(f"cannot send a tensor of dtype {dtype}")
    raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
    return {"T": "tensor", "dtype": dtype, "shape": list(tensor.shape), "data": base64.b64encode(raw).decode(),
            "grad": bool(value.requires_grad)}


def _encode_numpy(value, depth: int):
    import numpy as np
    if isinstance(value, np.generic) and value.dtype.name in _NUMPY_DTYPES:     # keeps its dtype (float32 ...)
        return dict(_encode_numpy(np.asarray(value), depth), T="npscalar")
    if isinstance(value, np.generic):
        return encode(value.item(), depth)
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return {"T": "objarray", "shape": list(value.shape),
                    "v": [encode(v, depth + 1) for v in value.reshape(-1).tolist()]}
        dtype = value.dtype.name
        if dtype not in _NUMPY_DTYPES:
            raise WireError(f"cannot send an array of dtype {dtype}")
        raw = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
        return {"T": "ndarray", "dtype": dtype, "shape": list(value.shape), "data": base64.b64encode(raw).decode()}
    if isinstance(value, np.dtype):
        return {"T": "np_dtype", "v": value.name}
    raise WireError(f"cannot send a {type(value).__name__}")


def _encode_column(values, depth: int) -> Any:
    import numpy as np
    array = np.asarray(values)
    return encode(array if array.dtype != object else array.tolist(), depth + 1)


def _encode_index(index, depth: int) -> dict:
    levels = [_encode_column(index.get_level_values(i), depth) for i in range(index.nlevels)]
    return {"names": [encode(n, depth + 1) for n in index.names], "levels": levels}


def _encode_pandas(value, depth: int) -> dict:
    import pandas as pd
    if isinstance(value, pd.DataFrame):
        return {"T": "frame", "columns": _encode_index(value.columns, depth),
                "index": _encode_index(value.index, depth),
                "data": [_encode_column(value.iloc[:, i].to_numpy(), depth) for i in range(value.shape[1])]}
    if isinstance(value, pd.Series):
        return {"T": "series", "name": encode(value.name, depth + 1), "index": _encode_index(value.index, depth),
                "data": _encode_column(value.to_numpy(), depth)}
    raise WireError(f"cannot send a {type(value).__name__}")


# ----------------------------------------------------------------------------------------------- decode

def decode(data: Any, depth: int = 0) -> Any:
    """The value that :func:`encode` described, built from scratch out of base types; :class:`WireError` for
    anything that is not exactly that format."""
    if depth > MAX_DEPTH:
        raise WireError(f"nested deeper than {MAX_DEPTH} levels")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is not dict or type(data.get("T")) is not str:
        raise WireError("not plain data")
    kind = data["T"]
    if kind in ("list", "tuple"):
        items = [decode(v, depth + 1) for v in _typed(data, "v", list)]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        out = {}
        for pair in _typed(data, "v", list):
            if type(pair) is not list or len(pair) != 2:
                raise WireError("a dict entry is not a pair")
            key = decode(pair[0], depth + 1)
            if not isinstance(key, (str, int, float, bool, tuple, type(None))):
                raise WireError("a dict key that is not a plain value")
            out[key] = decode(pair[1], depth + 1)
        return out
    if kind == "complex":
        re_im = _typed(data, "v", list)
        if len(re_im) != 2 or not all(type(x) in (int, float) for x in re_im):
            raise WireError("a complex number is two numbers")
        return complex(re_im[0], re_im[1])
    if kind == "tensor":
        return _decode_tensor(data)
    if kind == "ndarray":
        return _decode_ndarray(data)
    if kind == "npscalar":
        array = _decode_ndarray(data)
        if array.ndim:
            raise WireError("a scalar has no shape")
        return array[()]
    if kind == "objarray":
        import numpy as np
        shape = _shape(data)
        items = [decode(v, depth + 1) for v in _typed(data, "v", list)]
        if math.prod(shape) != len(items):
            raise WireError("an array's shape does not match its items")
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(shape)
    if kind in ("torch_dtype", "np_dtype"):
        name = _typed(data, "v", str)
        if name not in (_TORCH_DTYPES if kind == "torch_dtype" else _NUMPY_DTYPES):
            raise WireError(f"unknown dtype {name[:40]!r}")
        if kind == "np_dtype":
            import numpy as np
            return np.dtype(name)
        import torch
        return getattr(torch, name)
    if kind in ("frame", "series"):
        return _decode_pandas(data, depth)
    raise WireError(f"unknown kind {kind[:40]!r}")


def _typed(data: dict, key: str, kind: type) -> Any:
    value = data.get(key)
    if type(value) is not kind:
        raise WireError(f"field {key!r} is not a {kind.__name__}")
    return value


def _shape(data: dict) -> list:
    shape = _typed(data, "shape", list)
    if len(shape) > MAX_DEPTH or not all(type(n) is int and 0 <= n < 2 ** 40 for n in shape):
        raise WireError("a shape is a short list of sizes >= 0")
    return shape


def _raw(data: dict, itemsize: int, shape: list) -> bytes:
    try:
        raw = base64.b64decode(_typed(data, "data", str), validate=True)
    except ValueError:
        raise WireError("an array's bytes are not base64") from None
    if len(raw) != math.prod(shape) * itemsize:
        raise WireError("an array's bytes do not match its dtype and shape")
    return raw


def _decode_tensor(data: dict):
    import torch
    name = _typed(data, "dtype", str)
    if name not in _TORCH_DTYPES:
        raise WireError(f"unknown tensor dtype {name[:40]!r}")
    dtype, shape = getattr(torch, name), _shape(data)
    raw = _raw(data, torch.empty((), dtype=dtype).element_size(), shape)
    if not raw:
        tensor = torch.empty(shape, dtype=dtype)
    else:
        tensor = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape).clone()
    if data.get("grad") is True and (tensor.is_floating_point() or tensor.is_complex()):
        tensor.requires_grad_(True)
    return tensor


def _decode_ndarray(data: dict):
    import numpy as np
    name = _typed(data, "dtype", str)
    if name not in _NUMPY_DTYPES:
        raise WireError(f"unknown array dtype {name[:40]!r}")
    dtype, shape = np.dtype(name).newbyteorder("<"), _shape(data)
    raw = _raw(data, dtype.itemsize, shape)
    return np.frombuffer(raw, dtype=dtype).astype(np.dtype(name)).reshape(shape).copy()


def _decode_index(data: Any, depth: int):
    import pandas as pd
    if type(data) is not dict:
        raise WireError("an index is a dict")
    names = [decode(n, depth + 1) for n in _typed(data, "names", list)]
    levels = [_column(v, depth) for v in _typed(data, "levels", list)]
    if not levels or len(names) != len(levels) or len({len(level) for level in levels}) > 1:
        raise WireError("an index's names and levels do not match")
    if len(levels) == 1:
        return pd.Index(levels[0], name=names[0], tupleize_cols=False)
    return pd.MultiIndex.from_arrays(levels, names=names)


def _column(data: Any, depth: int):
    import numpy as np
    value = decode(data, depth + 1)
    if isinstance(value, list):
        out = np.empty(len(value), dtype=object)
        out[:] = value
        return out
    if not isinstance(value, np.ndarray) or value.ndim != 1:
        raise WireError("a column is a list or a one-dimensional array")
    return value


def _decode_pandas(data: dict, depth: int):
    import pandas as pd
    index = _decode_index(data.get("index"), depth)
    if data["T"] == "series":
        values = _column(data.get("data"), depth)
        if len(values) != len(index):
            raise WireError("a series' values and index differ in length")
        series = pd.Series(values).infer_objects() if values.dtype == object else pd.Series(values)
        series.index, series.name = index, decode(data.get("name"), depth + 1)
        return series
    columns = _decode_index(data.get("columns"), depth)
    values = [_column(v, depth) for v in _typed(data, "data", list)]
    if len(values) != len(columns) or any(len(v) != len(index) for v in values):
        raise WireError("a frame's columns, values and index do not match")
    # an object column that holds numbers only (NaN included) is a number column again, as pandas would make it
    frame = pd.DataFrame({i: pd.Series(v).infer_objects() if v.dtype == object else v
                          for i, v in enumerate(values)})
    frame.index, frame.columns = index, columns
    return frame


# ----------------------------------------------------------------------------------------------- frames

def write_frame(fd: int, message: Any) -> None:
    """Send one JSON message (already plain data) on ``fd``."""
    body = json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise WireError(f"a message of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    data = memoryview(struct.pack(">I", len(body)) + body)
    while data:
        data = data[os.write(fd, data):]


def _read_exact(fd: int, n: int, deadline: Optional[float]) -> Optional[bytes]:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no answer in time")
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            if got:
                raise WireError("the message was cut off")
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: Optional[float] = None) -> Any:
    """The next JSON message on ``fd`` (``None`` at end of file); :class:`TimeoutError` when ``deadline``
    (``time.monotonic()``) passes first; :class:`WireError` for a broken frame."""
    head = _read_exact(fd, 4, deadline)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    if size > MAX_FRAME:
        raise WireError(f"a message of {size} bytes is over the {MAX_FRAME}-byte limit")
    body = _read_exact(fd, size, deadline)
    if body is None:
        raise WireError("the message was cut off")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"not a JSON message ({type(exc).__name__})") from None
