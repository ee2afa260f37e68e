"""scripts/demo.sh end to end at toy size: every `dsdi` step runs through the installed CLI, the random
baseline covers the same shots as the ensemble, and the summary lines and report are written."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run_shots(trec_path: Path) -> dict[str, list[str]]:
    """topic -> shot ids in rank order, from a TREC run file."""
    shots: dict[str, list[str]] = defaultdict(list)
    for line in trec_path.read_text().splitlines():
        topic, _, shot, rank, _, _ = line.split()
        shots[topic].append(shot)
        assert int(rank) == len(shots[topic])
    return shots


@pytest.mark.slow
@pytest.mark.parametrize(("labelset", "topics"), [("ladi-v1", [str(n) for n in range(1, 33)]),
                                                  ("ladi-v2a", ["bridges_any", "buildings_any", "roads_any"])])
def test_demo_script_runs_every_step_at_toy_size(tmp_path, labelset, topics):
    run_dir = tmp_path / "demo"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # this venv's `dsdi`
        "DEMO_IMAGES": "60", "DEMO_CLIPS": "4", "DEMO_EPOCHS": "1", "DEMO_BACKBONE": "lcnet_050",
        "DEMO_IMG_SIZE": "32", "DEMO_SEED": "3", "DEMO_LABELSET": labelset,
    }  # fmt: skip
    result = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), str(run_dir)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    for step in range(1, 8):
        assert f"{step}/7 dsdi" in result.stdout or (step == 2 and labelset != "ladi-v1")
    summary = result.stdout[result.stdout.index("== mAP over the features"):]
    for name in ("ensemble (focal+cbfl)", "focal alone", "cbfl alone", "random ranking"):
        line = next(row for row in summary.splitlines() if row.strip().startswith(name))
        assert 0.0 <= float(line.split()[-1]) <= 1.0
    assert f"report: {run_dir}/report.html" in result.stdout
    assert (run_dir / "report.html").stat().st_size > 10_000

    ensemble = _run_shots(run_dir / "rank" / "ensemble" / "ensemble.trec")
    random_run = _run_shots(run_dir / "rank" / "random" / "random.trec")
    assert ensemble.keys() == random_run.keys() and set(topics) <= set(ensemble)
    assert len(ensemble) == (32 if labelset == "ladi-v1" else 12)
    for fnum, shots in ensemble.items():
        assert sorted(random_run[fnum]) == sorted(shots) and len(shots) == 4
    for run in ("ensemble", "focal", "cbfl", "random"):
        assert (run_dir / "eval" / f"{run}.csv").read_text().splitlines()[-1].startswith("all,")
