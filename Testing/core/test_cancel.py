"""A cancel (SIGTERM, what Slicer's Cancel and a batch scheduler send) at any moment of a real
``segment`` or ``survival --study`` leaves either every output file or none, never a label map without
its probabilities or a survival curve without its label map (issue 16), and the words say which."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import needs_model

ROOT = Path(__file__).resolve().parents[2]


#: command -> (its arguments for a study and an output folder, the files it writes there, its result's main file)
COMMANDS = {
    "segment": (lambda study, out: ["segment", str(study), "-o", str(out / "seg.nii.gz"), "--probabilities",
                                    str(out / "probabilities.nii.gz")],
                ["probabilities.nii.gz", "seg.nii.gz"], "seg.nii.gz"),
    "survival": (lambda study, out: ["survival", "--study", str(study), "--age", "60", "-o", str(out)],
                 ["segmentation.nii.gz", "survival.json", "survival.png"], "survival.json"),
}


def _start(command, study, out: Path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "GliomaSuite"))
    return subprocess.Popen([sys.executable, "-m", "gliomasuite", "--json-progress", *COMMANDS[command][0](study, out),
                             "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@needs_model
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_sigterm_at_any_moment_leaves_every_output_or_none(tmp_path, command):
    from gliomasuite.demo import make_demo_study

    study = make_demo_study(tmp_path / "demo", seed=0)
    start = time.monotonic()
    full = _start(command, study, tmp_path / "full")
    assert full.wait(timeout=600) == 0, full.stderr.read()
    duration = time.monotonic() - start

    # Cancelled as soon as the job says it has reached a stage: certain to land before the end, whatever the
    # machine's load (the timed cancels below may all come too late on a busy machine, or too early).
    for stage in (0.1, 0.5):
        out = tmp_path / f"stage{stage}"
        process = _start(command, study, out)
        for line in process.stdout:
            record = json.loads(line)
            if record["event"] == "done" or (record["event"] == "progress" and record["fraction"] >= stage):
                break
        assert record["event"] == "progress", (stage, record)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode != 0 and not out.exists(), (stage, process.returncode, stderr[-300:])
        assert "Cancelled; nothing was written" in stderr + stdout and "Traceback" not in stderr, stderr[-500:]

    # Cancelled at moments spread over a whole run's duration, the last ones while the outputs are written:
    # whether each lands before the end depends on the machine's load, so either outcome is checked.
    for i, fraction in enumerate((0.3, 0.6, 0.8, 0.88, 0.93, 0.97, 1.0)):
        out = tmp_path / f"run{i}"
        process = _start(command, study, out)
        time.sleep(fraction * duration)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=600)
        left = sorted(p.name for p in out.rglob("*")) if out.exists() else []
        if process.returncode == 0:
            assert left == COMMANDS[command][1], (fraction, left)
            assert json.loads(stdout.strip().splitlines()[-1])["result"]["output"] == str(out / COMMANDS[command][2])
        else:
            assert not out.exists(), (fraction, left, process.returncode, stderr[-300:])  # not even the folder it made
            assert "Cancelled; nothing was written" in stderr + stdout and "Traceback" not in stderr, stderr[-500:]
