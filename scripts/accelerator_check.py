"""One-command accelerator check (run by scripts/accelerator_check.sh on a GPU machine):
parity of every arch on the device, the JAX vs torch bench (bf16 against torch AMP eager and
`torch.compile`, then fp32 against torch eager), and the real training loop; one JSON and
one markdown table in OUT_DIR. Parts that would pass the deadline are reported as not run.

    python scripts/accelerator_check.py OUT_DIR [--minutes 7.5]
    python scripts/accelerator_check.py OUT_DIR --dry-run   # every path on the CPU, tiny, < 2 min

`--dry-run` runs the same functions on whatever device JAX has (the CPU in the test suite)
at tiny widths and sizes, two archs, so a run on a GPU can only fail for GPU reasons.
"""

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU

import jax  # noqa: E402
import numpy as np  # noqa: E402

# The real check: every arch at upstream widths, the bench at batch 16 x 512, 20 loop steps.
FULL = {"archs": None, "batch": 16, "size": 512, "repeats": 3, "parity_size": 256,
        "imported": {"2d": (8, (2, 3, 96, 128)), "3d": (4, (1, 2, 32, 48, 40))},
        "volume": (32, (2, 1, 128, 128, 128)),
        "loop": ["--size", "512", "--batch", "16", "--images", "512", "--threads", "8",
                 "--torch-workers", "8", "--steps", "20"]}
# The dry run: the same code paths, tiny.
DRY = {"archs": {"imgseg_unet": {"base_width": 8},
                 "smp_unet": {"encoder_name": "resnet18", "encoder_depth": 3,
                              "decoder_channels": (16, 16, 8)}},
       "batch": 2, "size": 32, "repeats": 1, "parity_size": 32,
       "imported": {"2d": (4, (2, 2, 20, 24)), "3d": (2, (1, 2, 9, 12, 10))},
       "volume": (2, (1, 1, 12, 16, 16)),
       "loop": ["--size", "32", "--batch", "2", "--images", "8", "--threads", "1",
                "--torch-workers", "0", "--steps", "2", "--model", '{"base_width": 8}']}


def archs(plan: dict) -> dict:
    from unet_jax import registry
    return plan["archs"] or {arch: {} for arch in registry.list_models()}


def parity(report: dict, deadline: float, plan: dict) -> None:
    """Every arch at upstream widths, fp32: JAX (matmul precision highest) vs torch on the
    same GPU with TF32 off, outputs within the fp32 tolerance."""
    import torch

    import unet_jax
    from unet_jax import registry
    from unet_jax.parity import bench, harness
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = report.setdefault("parity", [])
    for arch, options in archs(plan).items():
        if time.time() > deadline:
            rows.append({"arch": arch, "status": "not run (time)"})
            continue
        config = registry.make_config(arch, **options)
        h, w = bench.bench_size(arch, plan["parity_size"])
        ref = harness.random_reference(config, seed=0)
        options = {"deep_supervision": True} if getattr(config, "deep_supervision", False) else {}
        model = unet_jax.load_torch({k: v.numpy() for k, v in ref.state_dict().items()}, **options)
        x = np.random.default_rng(0).standard_normal((2, h, w, harness.reference_in_channels(config))
                                                    ).astype(np.float32)
        ref = ref.to(device)
        with torch.no_grad():
            want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device))
        want = [t.cpu().numpy().transpose(0, 2, 3, 1) for t in (want if isinstance(want, list) else [want])]
        with jax.default_matmul_precision("highest"):
            got = jax.jit(lambda m, x: m(x))(model, jax.numpy.asarray(x))
        got = [np.asarray(g) for g in (got if isinstance(got, list) else [got])]
        worst = max(d.max_rel for d in harness.compare_outputs(want, got))
        rows.append({"arch": arch, "input": f"2x{h}x{w}", "max_rel": worst,
                     "tolerance": harness.TOLERANCE["float32"],
                     "status": "pass" if worst <= harness.TOLERANCE["float32"] else "FAIL"})
        print(f"parity {arch}: {worst:.2e}", flush=True)
    imported_parity(rows, deadline, plan, device)


def imported_parity(rows: list, deadline: float, plan: dict, device) -> None:
    """Imported networks (unet_jax.import_torch of plain-torch U-Nets, 2-D and 3-D, every
    uncommon op option) against torch on the same device."""
    import torch

    import unet_jax
    from unet_jax.parity import harness, user_nets
    for dims, (width, shape) in plan["imported"].items():
        name = f"imported UserUNet {dims}"
        if time.time() > deadline:
            rows.append({"arch": name, "status": "not run (time)"})
            continue
        torch.manual_seed(0)
        module = user_nets.UserUNet(in_channels=shape[1], dims=int(dims[0]), width=width,
                                    norm="batch" if dims == "2d" else "instance").eval()
        harness.randomize_weights(module, moderate=True)
        model = unet_jax.import_torch(module, torch.zeros(shape))
        x = torch.randn(shape)
        with torch.no_grad():
            want = module.to(device)(x.to(device))["logits"].cpu().numpy()
        with jax.default_matmul_precision("highest"):
            got = np.asarray(jax.jit(lambda m, x: m(x)["logits"])(model, jax.numpy.asarray(
                np.moveaxis(x.numpy(), 1, -1))))
        worst = float(np.abs(got - np.moveaxis(want, 1, -1)).max() / max(1.0, np.abs(want).max()))
        rows.append({"arch": name, "input": "x".join(map(str, shape)), "max_rel": worst,
                     "tolerance": harness.TOLERANCE["float32"],
                     "status": "pass" if worst <= harness.TOLERANCE["float32"] else "FAIL"})
        print(f"parity {name}: {worst:.2e}", flush=True)


def bench(report: dict, deadline: float, dtype: str, torch_compile: bool, out: Path, plan: dict) -> None:
    from unet_jax.parity import bench as B
    rows = report.setdefault(f"bench_{dtype}", [])
    for arch, options in archs(plan).items():
        if time.time() > deadline:
            rows.append({"arch": arch, "status": "not run (time)"})
            continue
        try:
            row = B.bench_arch(arch, batch=plan["batch"], size=plan["size"], dtype=dtype,
                               repeats=plan["repeats"], torch_compile=torch_compile, options=options)
            rows.append(dict(dataclasses.asdict(row), status="ok"))
            print(f"bench {dtype} {arch}: train ratio {row.train_ratio:.2f}", flush=True)
        except Exception as e:  # noqa: BLE001 (one arch failing must not lose the others)
            rows.append({"arch": arch, "status": f"error: {type(e).__name__}: {e}"[:300]})
        (out / "accelerator_check.json").write_text(json.dumps(report, indent=2, default=str))


def volume_speed(report: dict, deadline: float, plan: dict) -> None:
    """A 3-D train step (the imported 3-D UserUNet, cross-entropy, SGD): JAX's in bf16 and fp32
    against torch eager's (AMP bf16, fp32) on the same device. XLA's 3-D convolutions are a
    known weak spot on GPUs."""
    import torch

    from unet_jax.parity import harness, user_nets

    class Logits(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)["logits"]

    width, shape = plan["volume"]
    rows = report.setdefault("volume", [])
    torch.manual_seed(0)
    module = Logits(user_nets.UserUNet(in_channels=shape[1], dims=3, width=width, norm="instance"))
    harness.randomize_weights(module, moderate=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    labels = rng.integers(0, 3, (shape[0], *shape[2:])).astype(np.int32)
    for dtype in ("bfloat16", "float32"):
        if time.time() > deadline:
            rows.append({"dtype": dtype, "status": "not run (time)"})
            continue
        try:
            times = _volume_step_times(module, x, labels, dtype, plan["repeats"])
        except Exception as e:  # noqa: BLE001 (an out-of-memory must not lose the rest of the check)
            rows.append({"dtype": dtype, "status": f"error: {type(e).__name__}: {e}"[:300]})
            continue
        rows.append({"dtype": dtype, "input": "x".join(map(str, shape)), "width": width, "status": "ok",
                     **times, "ratio": times["jax_train_s"] / times["torch_train_s"]})
        print(f"volume {dtype}: JAX {times['jax_train_s']:.4f} s, torch {times['torch_train_s']:.4f} s",
              flush=True)


def _volume_step_times(module, x, labels, dtype: str, repeats: int) -> dict:
    """Median train-step seconds of JAX (the module imported) and torch eager, and JAX's compile;
    in float32 both without TF32 (the parity section turned torch's off), cuDNN autotuned as
    nnU-Net runs it."""
    import torch
    from flax import nnx

    import unet_jax
    from unet_jax.parity import bench as B
    from unet_jax.train import steps
    from unet_jax.train.config import TrainConfig
    from unet_jax.train.optimizer import make_optimizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    cfg = TrainConfig(arch="imported", num_classes=3, dtype=dtype, optimizer="sgd", lr=0.01, loss="ce",
                      preprocess="none", schedule="constant")
    model = unet_jax.import_torch(module.cpu().eval(), torch.from_numpy(x))
    model.train()
    optimizer = nnx.Optimizer(model, make_optimizer(cfg, model, 1), wrt=nnx.Param)
    train_step = steps.make_steps(cfg)[0]
    xj, yj = jax.numpy.asarray(np.moveaxis(x, 1, -1)), jax.numpy.asarray(labels)
    module = module.to(device).train()
    opt = torch.optim.SGD(module.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(labels).long().to(device)

    def torch_step():
        opt.zero_grad()
        with torch.autocast(device.type, torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = torch.nn.functional.cross_entropy(module(xt), yt)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    with jax.default_matmul_precision("highest" if dtype == "float32" else "default"):
        start = time.perf_counter()
        jax.block_until_ready(train_step(model, optimizer, xj, yj))
        compile_s = time.perf_counter() - start
        jax_s, torch_s = B._median_alternating(
            [lambda: jax.block_until_ready(train_step(model, optimizer, xj, yj)), torch_step], repeats)
    return {"jax_train_s": jax_s, "torch_train_s": torch_s, "jax_compile_s": compile_s}


def loop(report: dict, deadline: float, out: Path, plan: dict) -> None:
    budget = int(deadline - time.time())
    if budget < (10 if plan is DRY else 60):
        report["loop"] = {"status": "not run (time)"}
        return
    import importlib.util
    # albumentations (with opencv, 61 MB) is not in the GPU image and too big to carry
    augment = "basic" if importlib.util.find_spec("albumentations") else "none"
    cmd = [sys.executable, "scripts/bench_loop.py", *plan["loop"], "--augment", augment,
           "--json", str(out / "loop.json")]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=min(budget, 150))
        report["loop"] = (json.loads((out / "loop.json").read_text()) if done.returncode == 0
                          else {"status": f"error: {done.stderr[-500:]}"})
    except subprocess.TimeoutExpired:
        report["loop"] = {"status": "not run (time)"}


def markdown(report: dict) -> str:
    lines = [f"Accelerator check, {report['date']}, {report['device']}; {report['versions']}", "",
             "| arch | parity fp32 (max rel) | bf16 train img/s JAX / AMP / compile | ratio vs AMP / compile "
             "| bf16 MFU train | peak MB JAX / torch | fp32 train img/s JAX / torch | ratio |",
             "|---|---|---|---|---|---|---|---|"]
    by = {k: {r["arch"]: r for r in report.get(k, [])} for k in ("parity", "bench_bf16", "bench_fp32")}
    for arch in by["parity"]:
        p, b, f = by["parity"][arch], by["bench_bf16"].get(arch, {}), by["bench_fp32"].get(arch, {})

        def ips(r, key):
            return f"{r['batch'] / r[key]:.0f}" if r.get(key) else "-"

        cells = [arch, f"{p['max_rel']:.1e} {p['status']}" if "max_rel" in p else p["status"],
                 " / ".join(ips(b, k) for k in ("jax_train_s", "torch_train_s", "torch_compile_train_s")),
                 (f"{b['train_ratio']:.2f} / {b['compile_train_ratio']:.2f}" if b.get("compile_train_ratio")
                  else b.get("status", "-")),
                 f"{b['mfu_train']:.0%}" if b.get("mfu_train") else "-",
                 (f"{b['jax_peak_mb']:.0f} / {b.get('torch_peak_mb') or 0:.0f}"
                  if b.get("jax_peak_mb") else "-"),
                 " / ".join(ips(f, k) for k in ("jax_train_s", "torch_train_s")),
                 f"{f['train_ratio']:.2f}" if f.get("train_ratio") else f.get("status", "-")]
        lines.append("| " + " | ".join(cells) + " |")
    loop_ = report.get("loop", {})
    if "torch_loop" in loop_:
        threads = next(k for k in loop_ if k.startswith("jax_loop_threads"))
        lines += ["", f"Training loop (imgseg_unet, {loop_.get('size')}x{loop_.get('size')}, batch "
                  f"{loop_.get('batch')}, JPEG folder, augmentation {loop_.get('augment')!r}, "
                  f"{threads.removeprefix('jax_loop_threads')} data threads): "
                  f"JAX {loop_[threads]:.0f} img/s (step-only "
                  f"{loop_['jax_step_only']:.0f}), torch DataLoader(8 workers) "
                  f"{loop_['torch_loop']:.0f} img/s (step-only {loop_['torch_step_only']:.0f})."]
    else:
        lines += ["", f"Training loop: {loop_.get('status', 'not run')}"]
    for row in report.get("volume", []):
        lines += ["", (f"3-D train step ({row['dtype']}, imported 3-D UserUNet width {row['width']}, "
                       f"{row['input']}): JAX {row['jax_train_s']:.4f} s, torch eager "
                       f"{'AMP ' if row['dtype'] == 'bfloat16' else ''}{row['torch_train_s']:.4f} s, "
                       f"ratio {row['ratio']:.2f}; JAX compile {row['jax_compile_s']:.1f} s")
                      if row["status"] == "ok" else f"3-D train step ({row['dtype']}): {row['status']}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--minutes", type=float, default=7.5)
    p.add_argument("--dry-run", action="store_true",
                   help="every code path at tiny widths and sizes (on the CPU: under 2 minutes)")
    args = p.parse_args()
    plan = DRY if args.dry_run else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    deadline = start + 60 * args.minutes
    import torch
    report = {"date": time.strftime("%Y-%m-%d"), "device": str(jax.devices()[0].device_kind),
              "versions": f"jax {jax.__version__}, torch {torch.__version__}, "
                          f"Python {platform.python_version()}"}
    share = 60 * args.minutes / 7.5  # of the default 7.5 minutes: 1.5 parity, 3 bf16, ...
    parity(report, start + 1.5 * share, plan)
    bench(report, start + 4.5 * share, "bf16", True, args.out, plan)
    volume_speed(report, start + 5.25 * share, plan)
    loop(report, start + 6.5 * share, args.out, plan)
    bench(report, deadline, "fp32", False, args.out, plan)
    report["seconds"] = time.time() - start
    (args.out / "accelerator_check.json").write_text(json.dumps(report, indent=2, default=str))
    table = markdown(report)
    (args.out / "accelerator_check.md").write_text(table)
    print(table)
    failed = any(r.get("status") == "FAIL" for r in report["parity"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
