"""kill -9 anywhere: run `unet-jax train` (tiny model, synthetic data) once uninterrupted,
then in another workdir kill it with SIGKILL at seeded random points (`unet_jax.train.faults`:
between steps, inside an asynchronous checkpoint save, during validation, after an epoch is
logged, during the final pictures), rerunning the same command after each kill, and finally
once more to the end. The resumed run must end with `metrics.jsonl` and parameters
(latest and best checkpoints) bit-equal to the uninterrupted run's.

python scripts/kill_harness.py --kills 20 --seed 0   (exit 0: equal, 1: a difference)
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

EPOCHS, STEPS_PER_EPOCH = 2, 4  # 16 samples, batch 4
COMMAND = ["train", "--arch", "imgseg_unet", "--model", "base_width=4", "--num-classes", "3",
           "--image-size", "32", "--train-samples", "16", "--val-samples", "4", "--batch-size", "4",
           "--epochs", str(EPOCHS), "--checkpoint-every", "1", "--log-every", "1", "--keep", "2",
           "--no-progress"]
OCCURRENCES = {"step": EPOCHS * STEPS_PER_EPOCH, "checkpoint": EPOCHS * STEPS_PER_EPOCH,
               "validation": EPOCHS, "logged": EPOCHS, "pictures": 1}


def plan(kills: int, seed: int) -> list[tuple[str, int]]:
    """Seeded kill points, every kind covered first: (point, n-th occurrence in that run)."""
    rng = random.Random(seed)
    kinds = list(OCCURRENCES)
    rng.shuffle(kinds)
    chosen = kinds[:kills] + [rng.choice(list(OCCURRENCES)) for _ in range(kills - len(kinds))]
    return [(k, rng.randint(1, OCCURRENCES[k])) for k in chosen]


def run(workdir: Path, kill_at: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, UNET_JAX_KILL_AT=kill_at)
    return subprocess.run([sys.executable, "-m", "unet_jax.cli", *COMMAND, "--workdir", str(workdir)],
                          env=env, capture_output=True, text=True, timeout=600)


def parameters(workdir: Path, which: str) -> dict:
    import unet_jax
    return unet_jax.to_torch_state_dict(unet_jax.load(workdir, which=which))


def compare(reference: Path, victim: Path) -> list[str]:
    """What differs between two finished workdirs: metrics.jsonl, latest and best parameters."""
    read = lambda w: (w / "metrics.jsonl").read_text().splitlines()  # noqa: E731
    differences = [] if read(reference) == read(victim) else [f"{victim.name} metrics.jsonl"]
    for which in ("latest", "best"):
        a, b = parameters(reference, which), parameters(victim, which)
        differences += [f"{victim.name} {which} {k}" for k in a if not (a[k] == b[k]).all()]
    return differences


def harness(points: list[tuple[str, int]], root: Path) -> dict:
    """Kill at `points` in turn, rerunning after each kill; a run that finishes before its
    point is compared and the next points start a fresh workdir. Every finished workdir must
    equal the uninterrupted run: {"kills": [...], "runs": n, "equal": bool, "differences"}."""
    reference = root / "reference"
    done = run(reference)
    if done.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed:\n{done.stderr[-2000:]}")
    outcomes, differences, victims = [], [], 1
    victim = root / "victim1"
    for point, n in points:
        result = run(victim, f"{point}:{n}")
        outcome = {-9: "killed", 0: "finished before the point"}.get(result.returncode)
        if outcome is None:
            raise RuntimeError(f"run killed at {point}:{n} exited {result.returncode}:\n"
                               f"{result.stderr[-2000:]}")
        lines = [line for line in result.stdout.splitlines() if "resumed from" in line
                 or "damaged" in line or "stale lock" in line]
        outcomes.append({"point": point, "n": n, "outcome": outcome, "lines": lines})
        if result.returncode == 0:
            differences += compare(reference, victim)
            victims += 1
            victim = root / f"victim{victims}"
    if victim.exists():
        final = run(victim)
        if final.returncode != 0:
            raise RuntimeError(f"the final rerun failed:\n{final.stderr[-2000:]}")
        differences += compare(reference, victim)
    epochs = len((victim / "metrics.jsonl").read_text().splitlines()) if victim.exists() else EPOCHS
    return {"kills": outcomes, "workdirs": victims, "equal": not differences,
            "differences": differences[:10], "epochs_logged": epochs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = harness(plan(args.kills, args.seed), Path(tmp))
    print(json.dumps(report, indent=2))
    killed = sum(k["outcome"] == "killed" for k in report["kills"])
    print(f"{len(report['kills'])} kill points, {killed} runs killed, {report['workdirs']} "
          f"workdirs trained to the end through kills; every one bit-equal to the "
          f"uninterrupted run: {report['equal']}")
    return 0 if report["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
