"""A restricted reader for torch pickles that never imports or runs what they name.

`torch.save(model)` pickles whole modules: their classes (`__main__.UnetPlusPlus`,
`torch.nn.modules.conv.Conv2d`, ...) are globals that `torch.load(weights_only=True)` refuses
and `weights_only=False` would import and run. This unpickler resolves only torch's
tensor-rebuild functions and storage types (to functions of its own, so torch need not be
installed) and a few inert containers; every other global becomes a `Placeholder` that
records its name, arguments and state and does nothing else. Modules found that way are
turned into state_dicts from their `_parameters` / `_buffers` / `_modules`, as torch's
`Module.state_dict()` orders them. Reads torch's zip format and the legacy (torch < 1.6)
format.
"""

import io
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping

import ml_dtypes
import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}
_TORCH_DTYPES = {
    "float64": np.float64, "double": np.float64, "float32": np.float32, "float": np.float32,
    "float16": np.float16, "half": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64, "long": np.int64, "int32": np.int32, "int": np.int32, "int16": np.int16,
    "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
}
# Opcodes that resolve objects through copyreg's global extension cache, not find_class.
_REFUSED_OPCODES = {"EXT1", "EXT2", "EXT4"}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle is malformed or does something a checkpoint never needs."""


class Placeholder:
    """An inert stand-in for a global the pickle names: records, never runs."""

    _global = "?"
    args, kwargs, state = (), {}, None  # also for instances made by NEWOBJ, without __init__

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    @property
    def items(self) -> list:
        return self.__dict__.setdefault("_items", [])

    def __call__(self, *args, **kwargs):  # a placeholder used as a callable
        return _placeholder_class(f"{self._global}()")(*args, **kwargs)

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items.append((key, value))

    def append(self, value):
        self.items.append(value)

    def extend(self, values):
        self.items.extend(values)

    def __repr__(self):
        return f"<not loaded: {self._global}>"


def _placeholder_class(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (Placeholder,), {"_global": name})


class Storage:
    """A torch storage: a flat array of one dtype (filled later in the legacy format)."""

    def __init__(self, dtype, numel: int, data: np.ndarray | None = None):
        self.dtype, self.numel, self.data = np.dtype(dtype), numel, data


class Tensor:
    """A tensor as (storage, offset, size, stride), materialised on request."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, Storage):
            raise UnsafePickleError(f"a tensor is rebuilt from {storage!r}, not from a storage")
        ints = (offset, *size, *stride)
        if len(size) != len(stride) or not all(type(v) is int and v >= 0 for v in ints):
            raise UnsafePickleError(f"a tensor has invalid size {size!r} / stride {stride!r}")
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(size), stride

    def __array__(self, dtype=None, copy=None):
        numel = int(np.prod(self.shape, dtype=np.int64))
        storage = self.storage
        if storage.data is None or len(storage.data) != storage.numel:
            raise UnsafePickleError("a tensor's storage is missing from the file")
        if numel == 0:
            return np.zeros(self.shape, storage.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        if last >= storage.numel or numel > storage.numel:
            raise UnsafePickleError(f"a tensor of size {self.shape} does not fit its storage of "
                                    f"{storage.numel} elements")
        item = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(storage.data[self.offset:], self.shape,
                                               [s * item for s in self.stride], writeable=False)
        return np.array(view, dtype=dtype)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None):
    return Tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype,
                       metadata=None):
    if not isinstance(storage, Storage) or not isinstance(dtype, _TorchDtype):
        raise UnsafePickleError("a tensor is rebuilt from something other than a storage")
    dtype = dtype.dtype
    if storage.dtype != dtype:  # an untyped storage read as bytes: reinterpret
        storage = _retyped(storage, dtype)
    return Tensor(storage, offset, size, stride)


def _retyped(storage: Storage, dtype: np.dtype) -> Storage:
    out = Storage(dtype, storage.numel * storage.dtype.itemsize // dtype.itemsize)
    if storage.data is not None:
        out.data = storage.data.view(dtype)
    return out


def _rebuild_parameter(data, requires_grad=True, hooks=None, state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if not (isinstance(func, _Call) and func.fn in (_rebuild_tensor_v2, _rebuild_tensor_v3)):
        raise UnsafePickleError(f"a tensor subclass is rebuilt by {func!r}")
    return func(*args)


def _reconstructor(cls, base, state):
    """copyreg._reconstructor for protocol 0/1 pickles: an instance of a placeholder class."""
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        return cls()
    raise UnsafePickleError(f"copyreg._reconstructor of {cls!r}")


def _no_storage(*_):
    raise UnsafePickleError("a storage outside the checkpoint's main pickle")


def _load_from_bytes(raw):
    """torch.storage._load_from_bytes (plain `pickle.dump` of tensors): a nested checkpoint."""
    if not isinstance(raw, bytes):
        raise UnsafePickleError("_load_from_bytes of something other than bytes")
    obj, _ = load_bytes(raw)
    if not isinstance(obj, Storage):
        raise UnsafePickleError("_load_from_bytes did not hold a storage")
    return obj


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset, ("__builtin__", "frozenset"): frozenset,
    ("copyreg", "_reconstructor"): _reconstructor, ("copy_reg", "_reconstructor"): _reconstructor,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
}


class _Call:
    """A fresh wrapper per lookup, without `__dict__` or `__setstate__`: a pickle's BUILD
    cannot alter the functions above or leave anything behind for the next file."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


class _StorageType:
    __slots__ = ("dtype",)

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _TorchDtype:
    __slots__ = ("dtype",)

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves the allow-list above; records every other global as a Placeholder class."""

    def __init__(self, file, read_storage):
        super().__init__(file)
        self.read_storage = read_storage  # (key, dtype, numel, location) -> Storage
        self.placeholders: set[str] = set()
        self._classes: dict[str, type] = {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _Call(_ALLOWED[(module, name)])
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchDtype(_TORCH_DTYPES[name])
        full = f"{module}.{name}"
        self.placeholders.add(full)
        return self._classes.setdefault(full, _placeholder_class(full))

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and pid[:1] == ("module",) and len(pid) == 4:
            return pid[1]  # legacy files record each module class's source: not used
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and type(pid[4]) is int and pid[4] >= 0):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise UnsafePickleError("storage views (torch < 0.4 files) are not supported")
        return self.read_storage(pid[2], pid[1].dtype, pid[4])


def _check_opcodes(data: bytes) -> None:
    try:
        for op, _, _ in pickletools.genops(data):
            if op.name in _REFUSED_OPCODES:
                raise UnsafePickleError(f"pickle opcode {op.name} (copyreg extension registry)")
    except (ValueError, struct.error) as e:  # genops on damaged or truncated data
        raise UnsafePickleError(f"damaged pickle ({e})") from e


def _unpickle(data: bytes, read_storage) -> tuple[object, set[str]]:
    _check_opcodes(data)
    unpickler = RestrictedUnpickler(io.BytesIO(data), read_storage)
    try:
        obj = unpickler.load()
    except UnsafePickleError:
        raise
    except Exception as e:  # malformed pickles raise anything from the VM
        raise UnsafePickleError(f"damaged pickle ({type(e).__name__}: {e})") from e
    return obj, unpickler.placeholders


def load_zip(file: zipfile.ZipFile) -> tuple[object, set[str]]:
    """torch's zip format (`archive/data.pkl` + `archive/data/<key>`)."""
    pkl = [n for n in file.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
        raise UnsafePickleError("a zip file without torch's data.pkl")
    prefix = pkl[0][: -len("data.pkl")]
    order = "<"
    if f"{prefix}byteorder" in file.namelist():
        order = "<" if file.read(f"{prefix}byteorder").strip() == b"little" else ">"

    def read_storage(key, dtype, numel):
        name = f"{prefix}data/{key}"
        want = numel * np.dtype(dtype).itemsize
        try:
            if file.getinfo(name).file_size != want:  # before reading: no inflating a bomb
                raise UnsafePickleError(f"storage {key!r} has {file.getinfo(name).file_size} "
                                        f"bytes, expected {want}")
            raw = file.read(name)
        except KeyError:
            raise UnsafePickleError(f"storage {key!r} is missing from the zip") from None
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise UnsafePickleError(f"storage {key!r} is damaged ({e})") from e
        if len(raw) != want:
            raise UnsafePickleError(f"storage {key!r} has {len(raw)} bytes, expected {want}")
        return Storage(dtype, numel, np.frombuffer(raw, np.dtype(dtype).newbyteorder(order)))

    return _unpickle(file.read(pkl[0]), read_storage)


def load_legacy(data: bytes) -> tuple[object, set[str]]:
    """The legacy format: magic, protocol, sys_info, the object, its storage keys, the data."""
    stream = io.BytesIO(data)

    def next_pickle(read_storage=None):
        start = stream.tell()
        try:
            ends = [pos for op, _, pos in pickletools.genops(stream) if op.name == "STOP"]
        except (ValueError, struct.error) as e:
            raise UnsafePickleError(f"damaged pickle ({e})") from e
        end = ends[-1] + 1
        stream.seek(end)
        return _unpickle(data[start:end], read_storage or _no_storage)

    magic, _ = next_pickle()
    if magic != LEGACY_MAGIC:
        raise UnsafePickleError("a pickle that is not a torch checkpoint (no torch magic number)")
    next_pickle()  # protocol version
    sys_info, _ = next_pickle()
    little = not isinstance(sys_info, Mapping) or sys_info.get("little_endian", True)
    storages: dict[str, Storage] = {}

    def read_storage(key, dtype, numel):
        return storages.setdefault(key, Storage(dtype, numel))

    obj, placeholders = next_pickle(read_storage)
    keys, _ = next_pickle()
    if not isinstance(keys, list):
        raise UnsafePickleError("the storage key list is missing")
    for key in keys:
        storage = storages.get(key)
        header = stream.read(8)
        if storage is None or len(header) != 8:
            raise UnsafePickleError(f"storage {key!r} is missing or truncated")
        numel = struct.unpack("<q" if little else ">q", header)[0]
        dtype = storage.dtype.newbyteorder("<" if little else ">")
        raw = stream.read(numel * dtype.itemsize) if 0 <= numel <= storage.numel else b""
        if numel != storage.numel or len(raw) != numel * dtype.itemsize:
            raise UnsafePickleError(f"storage {key!r} is truncated")
        storage.data = np.frombuffer(raw, dtype)
    return obj, placeholders


def load_bytes(data: bytes) -> tuple[object, set[str]]:
    """A torch checkpoint (zip or legacy) or a plain pickle of tensors from `data`."""
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as file:
            return load_zip(file)
    try:
        return load_legacy(data)
    except UnsafePickleError as e:
        if "no torch magic number" not in str(e):
            raise
    return _unpickle(data, _no_storage)


def is_module(obj) -> bool:
    """A recorded nn.Module: a placeholder whose state has torch's module dictionaries."""
    return (isinstance(obj, Placeholder) and isinstance(obj.state, Mapping)
            and "_parameters" in obj.state and "_modules" in obj.state)


def module_state_dict(module: Placeholder, prefix: str = "") -> dict[str, object]:
    """torch's `Module.state_dict()` of a recorded module: parameters, persistent buffers,
    then submodules, depth first."""
    state = module.state
    out: dict[str, object] = {}
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in non_persistent:
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if is_module(child):
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out
