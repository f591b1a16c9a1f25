"""Fuzzing the file readers with hypothesis: mutated checkpoints, key sets and shapes around a
real key map, hostile pickles, random image bytes. Each input either loads correctly or
raises the library's own error naming the file; never another exception, never code run.
Seeded and bounded here (`UNET_JAX_FUZZ_EXAMPLES`, default 20 per property); README gives
the longer command."""

import os
import pickle
import shutil
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unet_jax
from unet_jax import registry
from unet_jax.checkpoints import saved as saving
from unet_jax.convert.engine import ConversionError
from unet_jax.convert.io import CheckpointError, write_state_dict
from unet_jax.data import datasets as data
from unet_jax.parity import harness

EXAMPLES = int(os.environ.get("UNET_JAX_FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
OURS = (CheckpointError, ConversionError)
CONFIG = registry.make_config("imgseg_unet", base_width=4, output_ch=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    state = {k: v.numpy() for k, v in harness.random_reference(CONFIG).state_dict().items()}
    return {suffix: write_state_dict(state, root / f"ref{suffix}").read_bytes()
            for suffix in (".pth", ".safetensors")}, state, root


def _check(path, state):
    """Loads with the reference's keys and shapes, or raises one of ours naming the file."""
    try:
        model = unet_jax.load_torch(path)
    except OURS as e:
        assert str(path) in str(e), e
        return "error"
    got = unet_jax.to_torch_state_dict(model)
    assert set(got) == set(state) and all(got[k].shape == state[k].shape for k in state)
    return "loaded"


@FUZZ
@given(suffix=st.sampled_from([".pth", ".safetensors"]), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=8))
def test_mutated_checkpoints(files, suffix, cut, flips):
    blobs, state, root = files
    blob = bytearray(blobs[suffix])
    for where, xor in flips:
        blob[int(where * (len(blob) - 1))] ^= xor
    blob = blob[: max(1, int(cut * len(blob)))] if cut < 0.98 else blob
    path = root / f"mutated{suffix}"
    path.write_bytes(bytes(blob))
    _check(path, state)


@FUZZ
@given(drop=st.sets(st.integers(0, 120), max_size=4), rename=st.sets(st.integers(0, 120), max_size=3),
       reshape=st.sets(st.integers(0, 120), max_size=3),
       dtype=st.sampled_from(["float32", "float16", "int64"]))
def test_key_sets_and_shapes_around_the_key_map(files, drop, rename, reshape, dtype):
    """Missing, unexpected, mis-shaped keys and other dtypes: a ConversionError naming a
    changed key, or a correct model when only defaultable keys changed."""
    _, state, _ = files
    keys = sorted(state)
    mutated, changed = {}, set()
    for i, k in enumerate(keys):
        value = state[k].astype(dtype) if state[k].dtype.kind == "f" else state[k]
        if i in drop:
            changed |= set() if k.endswith("num_batches_tracked") else {k}
            continue
        if i in reshape and value.ndim:
            value, changed = np.zeros((*value.shape[:-1], value.shape[-1] + 1), value.dtype), changed | {k}
        if i in rename:
            k, changed = f"{k}.extra", changed | {k}
        mutated[k] = value
    try:
        model = unet_jax.load_torch(mutated, arch="imgseg_unet", base_width=4, output_ch=2)
    except OURS as e:
        assert changed or dtype == "int64", e
        assert not changed or any(k in str(e) for k in changed), str(e)[:500]
        return
    assert not changed, f"loaded although {sorted(changed)[:3]} changed"
    got = unet_jax.to_torch_state_dict(model)
    assert all(got[k].shape == state[k].shape for k in state)


@FUZZ
@given(module=st.sampled_from(["os", "subprocess", "builtins", "posix", "shutil", "nowhere_mod"]),
       name=st.sampled_from(["system", "exec", "eval", "rmtree", "call", "getattr"]),
       where=st.sampled_from(["top", "value", "key"]))
def test_pickles_naming_arbitrary_globals_run_nothing(files, tmp_path_factory, module, name, where):
    _, state, root = files
    marker = tmp_path_factory.mktemp("marker") / "ran"
    # GLOBAL module name; (arg,) ; REDUCE -- a call of module.name("touch marker")
    call = (b"c" + module.encode() + b"\n" + name.encode() + b"\n" +
            b"X" + struct.pack("<I", len(f"touch {marker}")) + f"touch {marker}".encode() + b"\x85R")
    body = {"top": call, "value": b"}X\x01\x00\x00\x00a" + call + b"s",
            "key": b"}" + call + b"X\x01\x00\x00\x00as"}[where]
    path = root / "hostile.pth"
    path.write_bytes(b"\x80\x02" + body + b".")
    try:
        unet_jax.load_torch(path)
    except OURS as e:
        assert str(path) in str(e)
    assert not marker.exists()
    pickle.loads(pickle.dumps(1))  # the interpreter's own unpickler is untouched


@FUZZ
@given(blob=st.binary(max_size=300), as_mask=st.booleans())
def test_random_image_files(tmp_path_factory, blob, as_mask):
    root = tmp_path_factory.mktemp("img")
    good = data.Shapes(1, height=8, width=8)[0]
    from PIL import Image
    image, mask = root / "a.png", root / "a_mask.png"
    Image.fromarray(good[0]).save(image)
    Image.fromarray(good[1]).save(mask)
    (mask if as_mask else image).write_bytes(blob)
    try:
        data.FileDataset(((image, mask),), 4).read(0)
    except ValueError as e:
        assert str(mask if as_mask else image) in str(e)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny model: its files' bytes and its parameters."""
    root = tmp_path_factory.mktemp("saved") / "model"
    model = unet_jax.create_model("imgseg_unet", base_width=4, output_ch=2)
    unet_jax.save(model, root)
    files = {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return files, unet_jax.to_torch_state_dict(model), root.parent


@FUZZ
@given(which=st.integers(0, 10**6), action=st.sampled_from(["truncate", "flip", "delete"]),
       where=st.floats(0, 1), xor=st.integers(1, 255))
def test_damaged_saved_models(saved, which, action, where, xor):
    """A saved model with one file truncated, bit-flipped or deleted loads its exact
    parameters or raises ModelSourceError naming the directory; never another exception,
    never other numbers."""
    files, state, root = saved
    directory = root / "damaged"
    shutil.rmtree(directory, ignore_errors=True)
    for name, blob in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(blob)
    name = sorted(files)[which % len(files)]
    blob = bytearray(files[name])
    if action == "delete":
        (directory / name).unlink()
    elif action == "truncate":
        (directory / name).write_bytes(bytes(blob[: int(where * len(blob))]))
    elif blob:
        blob[int(where * (len(blob) - 1))] ^= xor
        (directory / name).write_bytes(bytes(blob))
    try:
        model = unet_jax.load(directory)
    except saving.ModelSourceError as e:
        assert str(directory) in str(e), e
        return
    got = unet_jax.to_torch_state_dict(model)
    assert set(got) == set(state) and all(np.array_equal(got[k], state[k]) for k in state)
