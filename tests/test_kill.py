"""kill -9 anywhere (scripts/kill_harness.py): SIGKILL inside an asynchronous checkpoint
save, after an epoch is logged (before its best checkpoint) and during the final pictures,
each rerun; the resumed run ends bit-equal to an uninterrupted one (metrics.jsonl, latest and
best parameters). Kills between steps and in validation: the script's seeded runs (README)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "kill_harness.py"


@pytest.mark.slow
def test_killed_and_resumed_runs_equal_an_uninterrupted_one(tmp_path):
    spec = importlib.util.spec_from_file_location("kill_harness", SCRIPT)
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    report = harness.harness([("checkpoint", 3), ("logged", 1), ("pictures", 1)], tmp_path)
    assert [k["outcome"] for k in report["kills"]] == ["killed"] * 3, report["kills"]
    assert report["equal"], report["differences"]
    assert report["epochs_logged"] == 2
