"""JAX vs torch, side by side in one process: jit-compiled JAX eval forward vs torch eager
`no_grad` forward, and one full training step (forward, loss, backward, SGD update,
BatchNorm in training mode) in each. Runs alternate JAX/torch after warm-up; medians.

torch runs where JAX runs: on CUDA when JAX's backend is a GPU (bf16: torch autocast, i.e.
eager AMP), else on the CPU. On a GPU, JAX allocates on demand
(`XLA_PYTHON_CLIENT_PREALLOCATE=false`) so both frameworks fit, and model FLOP utilisation is
reported: XLA's count of the model's FLOPs per call over the time and `--peak-tflops`.

XLA flags must be set before JAX starts, so `unet-jax bench` / `scripts/bench.py` set
`XLA_FLAGS` from `--xla-flags` (default: `DEFAULT_XLA_FLAGS`) and only then import JAX.
"""

import dataclasses
import json
import math
import os
import platform
import statistics
import time

import numpy as np

from unet_jax.kernels.cpu import host_memory

# Measured per op class on XLA:CPU (see docs/cpu-kernels.md); empty means XLA's defaults.
DEFAULT_XLA_FLAGS = ""
# Dense tensor-core peaks (TFLOP/s) from NVIDIA's datasheets, for model FLOP utilisation:
# fp32 runs on TF32 tensor cores in both frameworks (XLA's default precision, torch's
# default for cuDNN convolutions).
PEAK_TFLOPS = {("H100", "fp32"): 494.7, ("H100", "bf16"): 989.4,
               ("H200", "fp32"): 494.7, ("H200", "bf16"): 989.4}


@dataclasses.dataclass
class Row:
    arch: str
    batch: int
    size: tuple[int, int]
    dtype: str
    jax_infer_s: float
    torch_infer_s: float
    infer_ratio: float
    jax_train_s: float
    torch_train_s: float
    train_ratio: float
    jax_compile_infer_s: float
    jax_compile_train_s: float
    jax_temp_mb: float  # XLA's temp buffer size of the compiled train step
    torch_compile_infer_s: float | None = None
    torch_compile_train_s: float | None = None
    compile_infer_ratio: float | None = None  # JAX / torch.compile
    compile_train_ratio: float | None = None
    gflop_infer: float | None = None  # XLA's FLOP count of one call
    gflop_train: float | None = None
    mfu_infer: float | None = None  # fraction of peak_tflops
    mfu_train: float | None = None
    peak_tflops: float | None = None
    jax_peak_mb: float | None = None  # device memory high-water marks (GPU)
    torch_peak_mb: float | None = None
    device: str = ""
    versions: str = ""

    @property
    def images_per_s(self) -> tuple[float, float]:
        return self.batch / self.jax_infer_s, self.batch / self.jax_train_s


def bench_size(arch: str, size: int) -> tuple[int, int]:
    """The valid input nearest size x size (the arch's `SizeRule`)."""
    from unet_jax import registry
    s = registry.get_arch(arch).sizes.nearest(size)
    return s, s


def _median_alternating(fns: list, repeats: int, min_sample_s: float = 0.3) -> list[float]:
    """Median seconds per call of each fn; each sample averages enough calls to last
    `min_sample_s`, so millisecond steps are not drowned in timer and scheduler noise."""
    calls = []
    for fn in fns:
        start = time.perf_counter()
        fn()
        calls.append(max(1, math.ceil(min_sample_s / max(time.perf_counter() - start, 1e-6))))
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(calls[i]):
                fn()
            times[i].append((time.perf_counter() - start) / calls[i])
    return [statistics.median(t) for t in times]


def _gflop(lowered) -> float | None:
    """XLA's FLOP count of a lowered program (on CPU, Winograd convolutions count fewer)."""
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = (cost or {}).get("flops")
    return flops / 1e9 if flops else None


def peak_tflops_of(device_kind: str, dtype: str) -> float | None:
    return next((v for (kind, dt), v in PEAK_TFLOPS.items() if kind in device_kind and dt == dtype),
                None)


def bench_arch(arch: str, *, batch: int, size: int, dtype: str, repeats: int,
               torch_compile: bool, peak_tflops: float | None = None, options: dict | None = None) -> Row:
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    import unet_jax
    from unet_jax import registry
    from unet_jax.data.imageio import IGNORE_INDEX
    from unet_jax.inference.compiled import inference_jit
    from unet_jax.models import outputs
    from unet_jax.parity import harness
    from unet_jax.train import losses
    from unet_jax.train import steps as train_steps
    from unet_jax.train.config import TrainConfig
    from unet_jax.train.optimizer import make_optimizer

    on_gpu = jax.default_backend() == "gpu"
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("JAX runs on a GPU but this torch has no CUDA: the bench compares both "
                         "on the same device (JAX_PLATFORMS=cpu compares them on the CPU)")
    tdev = torch.device("cuda" if on_gpu else "cpu")
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)

    config = registry.make_config(arch, **(options or {}))  # options: e.g. small widths
    h, w = bench_size(arch, size)
    torch_model = harness.random_reference(config, seed=0)
    model = unet_jax.load_torch({k: v.numpy() for k, v in torch_model.state_dict().items()})
    channels = harness.reference_in_channels(config)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, h, w, channels)).astype(np.float32)
    y_shape = jax.eval_shape(model, jax.ShapeDtypeStruct(x.shape, jnp.float32))
    y_shape = outputs.last_head(y_shape)
    n_out = y_shape.shape[-1]
    labels = rng.integers(0, max(n_out, 2), (batch, h, w)).astype(np.int32)
    loss_name = "bce" if n_out == 1 else "ce"

    # JAX: jit eval forward and train step.
    compute = jnp.bfloat16 if dtype == "bf16" else jnp.float32
    model.eval()

    @inference_jit
    def infer(model, x):
        return outputs.last_head(model(x.astype(compute)))

    xj = jnp.asarray(x)
    t0 = time.perf_counter()
    lowered = infer.lower(model, xj)
    lowered.compile()
    jax_compile_infer = time.perf_counter() - t0
    gflop_infer = _gflop(lowered)

    cfg = TrainConfig(arch=arch, num_classes=n_out, optimizer="sgd", lr=0.01,
                            momentum=0.9, weight_decay=0.0, schedule="constant", loss=loss_name,
                            dtype="bfloat16" if dtype == "bf16" else "float32")
    train_model = unet_jax.load_torch({k: v.numpy() for k, v in torch_model.state_dict().items()})
    train_model.train()
    optimizer = nnx.Optimizer(train_model, make_optimizer(cfg, train_model, 1), wrt=nnx.Param)
    train_step, _ = train_steps.make_steps(cfg)
    lj = jnp.asarray(labels)
    t0 = time.perf_counter()
    lowered = train_step.lower(train_model, optimizer, xj, lj)
    compiled = lowered.compile()
    jax_compile_train = time.perf_counter() - t0
    gflop_train = _gflop(lowered)
    memory = compiled.memory_analysis()
    temp_mb = (memory.temp_size_in_bytes / 2**20) if memory is not None else float("nan")

    # torch eager: no_grad forward and a train step, on the device JAX runs on.
    torch_model.to(tdev).eval()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(tdev)
    target = torch.from_numpy(
        np.asarray(losses.center_crop_mask(labels, *y_shape.shape[1:-1]))
    ).to(tdev, torch.int64)
    amp = dtype == "bf16"
    torch_train_model = harness.reference_for(config)
    torch_train_model.load_state_dict(torch_model.state_dict())
    torch_train_model.to(tdev).train()
    opt = torch.optim.SGD(torch_train_model.parameters(), lr=0.01, momentum=0.9)

    def torch_loss(out):
        out = outputs.last_head(out)
        if n_out == 1:
            return torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0].float(), target.float())
        return torch.nn.functional.cross_entropy(out.float(), target, ignore_index=IGNORE_INDEX)

    def torch_infer(m=torch_model):
        with torch.no_grad(), torch.autocast(tdev.type, torch.bfloat16, enabled=amp):
            m(xt)
        sync()

    def torch_train(m=torch_train_model):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(tdev.type, torch.bfloat16, enabled=amp):
            loss = torch_loss(m(xt))
        loss.backward()
        opt.step()
        sync()

    def jax_infer():
        jax.block_until_ready(infer(model, xj))

    def jax_train():
        jax.block_until_ready(train_step(train_model, optimizer, xj, lj))

    for fn in (torch_infer, torch_train, jax_infer, jax_train):  # warm-up
        fn()
    ji, ti = _median_alternating([jax_infer, torch_infer], repeats)
    jt, tt = _median_alternating([jax_train, torch_train], repeats)

    tci = tct = None
    if torch_compile:
        compiled_model = torch.compile(torch_model)
        compiled_train = torch.compile(torch_train_model)
        for _ in range(2):
            torch_infer(compiled_model)
            torch_train(compiled_train)
        tci, tct = _median_alternating([lambda: torch_infer(compiled_model),
                                        lambda: torch_train(compiled_train)], repeats)

    kind = jax.devices()[0].device_kind
    peak = peak_tflops or peak_tflops_of(kind, dtype)
    mfu = lambda gflop, s: gflop / s / 1e3 / peak if peak and gflop else None  # noqa: E731
    stats = jax.devices()[0].memory_stats() or {}
    jax_peak = stats.get("peak_bytes_in_use")
    cpu = platform.processor() or platform.machine()
    device = f"{kind} x{jax.device_count()} ({cpu}, {os.cpu_count()} cores)"
    versions = f"jax {jax.__version__}, torch {torch.__version__}"
    return Row(arch=arch, batch=batch, size=(h, w), dtype=dtype,
               jax_infer_s=ji, torch_infer_s=ti, infer_ratio=ji / ti,
               jax_train_s=jt, torch_train_s=tt, train_ratio=jt / tt,
               jax_compile_infer_s=jax_compile_infer, jax_compile_train_s=jax_compile_train,
               jax_temp_mb=temp_mb, torch_compile_infer_s=tci, torch_compile_train_s=tct,
               compile_infer_ratio=ji / tci if tci else None,
               compile_train_ratio=jt / tct if tct else None,
               gflop_infer=gflop_infer, gflop_train=gflop_train,
               mfu_infer=mfu(gflop_infer, ji), mfu_train=mfu(gflop_train, jt), peak_tflops=peak,
               jax_peak_mb=jax_peak / 2**20 if jax_peak else None,
               torch_peak_mb=torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None,
               device=device, versions=versions)


def format_table(rows: list[Row]) -> str:
    """Markdown table; torch.compile and MFU columns appear when measured."""
    with_compile = any(r.torch_compile_infer_s for r in rows)
    with_mfu = any(r.mfu_train for r in rows)
    header = ["arch", "input", "dtype", "JAX infer (s)", "torch infer (s)", "**infer ratio**",
              "JAX train (s)", "torch train (s)", "**train ratio**", "JAX img/s infer/train",
              "compile infer/train (s)", "XLA temp (MB)"]
    header += ["torch.compile infer/train (s)", "ratio vs torch.compile"] if with_compile else []
    header += ["GFLOP infer/train", "MFU infer/train"] if with_mfu else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ips = r.images_per_s
        cells = [r.arch, f"{r.batch}x{r.size[0]}x{r.size[1]}", r.dtype, f"{r.jax_infer_s:.4f}",
                 f"{r.torch_infer_s:.4f}", f"**{r.infer_ratio:.2f}**", f"{r.jax_train_s:.4f}",
                 f"{r.torch_train_s:.4f}", f"**{r.train_ratio:.2f}**",
                 f"{ips[0]:.1f} / {ips[1]:.1f}",
                 f"{r.jax_compile_infer_s:.1f} / {r.jax_compile_train_s:.1f}", f"{r.jax_temp_mb:.0f}"]
        if with_compile:
            cells += [f"{r.torch_compile_infer_s:.4f} / {r.torch_compile_train_s:.4f}",
                      f"{r.compile_infer_ratio:.2f} / {r.compile_train_ratio:.2f}"]
        if with_mfu:
            cells += [f"{r.gflop_infer:.0f} / {r.gflop_train:.0f}",
                      f"{r.mfu_infer:.1%} / {r.mfu_train:.1%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_json(path: str, rows: list[Row]) -> None:
    with open(path, "w") as f:
        json.dump([dict(dataclasses.asdict(r), xla_flags=os.environ["XLA_FLAGS"]) for r in rows],
                  f, indent=2)


def main(args) -> int:
    # As for every CLI command (UNET_JAX_KEEP_FREED_MEMORY=0 opts out); process-wide, so
    # torch, timed in the same process, runs with it too.
    kept = host_memory.keep_freed_memory()
    if args.predict:
        from unet_jax.parity import bench_predict
        return bench_predict.main(args)
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS", ""),
                                                     args.xla_flags]))
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU
    from unet_jax import registry
    archs = args.archs or registry.list_models()
    unknown = sorted(set(archs) - set(registry.list_models()))
    if unknown:
        raise SystemExit(f"unknown arch(s) {', '.join(unknown)}; known archs: "
                         f"{', '.join(registry.list_models())}")
    rows = []
    for arch in archs:
        row = bench_arch(arch, batch=args.batch, size=args.size, dtype=args.dtype,
                         repeats=args.repeats, torch_compile=args.torch_compile,
                         peak_tflops=args.peak_tflops)
        rows.append(row)
        print(f"{arch}: infer ratio {row.infer_ratio:.2f}, train ratio {row.train_ratio:.2f}",
              flush=True)
        if args.json:  # after every arch, so an interrupted run keeps what it measured
            _write_json(args.json, rows)
    print(format_table(rows))
    print(f"\n{rows[0].device}; {rows[0].versions}; XLA_FLAGS={os.environ['XLA_FLAGS']!r}; "
          f"freed host memory kept: {kept}")
    return 0
