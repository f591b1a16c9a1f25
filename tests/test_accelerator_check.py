"""The accelerator check's dry run (scripts/accelerator_check.py --dry-run): every code path a
GPU run takes (parity of native and imported nets, the bf16 bench with torch AMP and
torch.compile, the fp32 bench, the real loop, the JSON and markdown), at tiny sizes on the
CPU, with every package the GPU image lacks and the check does not carry (scripts/gpu_wheels.txt)
blocked from import, in this process's children too."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Not on the GPU image and not carried: the check must not need them.
ABSENT = ["segmentation_models_pytorch", "monai", "nibabel", "tensorflow_datasets",
          "dynamic_network_architectures"]


def test_the_wheel_list_names_pinned_wheels():
    lines = [line for line in (ROOT / "scripts" / "gpu_wheels.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines and all(line.count("==") == 1 for line in lines), lines
    assert {"grain", "tensorboardX", "albumentations"} <= {line.split("==")[0] for line in lines}


@pytest.mark.slow
def test_dry_run_takes_every_path_of_the_gpu_run(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        f"import sys\nfor name in {ABSENT!r}:\n    sys.modules[name] = None  # import fails\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(blocker), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "scripts/accelerator_check.py", str(out), "--dry-run"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    report = json.loads((out / "accelerator_check.json").read_text())
    parity = {row["arch"]: row for row in report["parity"]}
    assert set(parity) == {"imgseg_unet", "smp_unet", "imported UserUNet 2d", "imported UserUNet 3d"}
    assert all(row["status"] == "pass" for row in parity.values()), parity
    for dtype in ("bf16", "fp32"):
        rows = report[f"bench_{dtype}"]
        assert [row["status"] for row in rows] == ["ok", "ok"], rows
    assert all(row["compile_train_ratio"] > 0 for row in report["bench_bf16"])  # torch.compile ran
    assert report["loop"]["jax_loop_threads1"] > 0 and report["loop"]["torch_loop"] > 0
    assert [(r["dtype"], r["status"]) for r in report["volume"]] == [("bfloat16", "ok"), ("float32", "ok")]
    assert all(r["jax_train_s"] > 0 and r["torch_train_s"] > 0 for r in report["volume"])
    table = (out / "accelerator_check.md").read_text()
    assert "| imported UserUNet 3d |" in table and "Training loop (imgseg_unet, 32x32" in table
    assert "3-D train step (bfloat16, imported 3-D UserUNet width 2, 1x1x12x16x16): JAX" in table
