"""The CLI's host-allocator setting: freed buffers over 64 MB allocated off the main thread
(as XLA:CPU's per-execution temp buffers) stay mapped, so reusing them does not fault."""

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import ctypes, resource, sys, threading
    from unet_jax.kernels.cpu import host_memory
    applied = host_memory.keep_freed_memory() if sys.argv[1] == "1" else False
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def fill():  # 96 MB, allocated, written and freed on a non-main thread
        size = 96 << 20
        buffer = libc.malloc(size)
        ctypes.memset(buffer, 1, size)
        libc.free(buffer)

    faults = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = threading.Thread(target=fill)
        t.start()
        t.join()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(applied, faults[-1])
""")


def faults_on_reuse(keep: bool) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if keep else "0"], check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_freed_memory_is_reused_without_page_faults():
    applied, kept = faults_on_reuse(True)
    _, default = faults_on_reuse(False)
    assert applied
    assert default > 20_000  # glibc's default: 96 MB of fresh pages faulted in again
    assert kept < 1_000


def test_opt_out(monkeypatch):
    from unet_jax.kernels.cpu import host_memory
    monkeypatch.setenv(host_memory.OPT_OUT, "0")
    assert host_memory.keep_freed_memory() is False
