"""Progress of long jobs, for people and for the Slicer module's background runner.

Human mode prints short lines with a percentage and an ETA. JSON mode prints one JSON object per
line (``{"event": "progress", "fraction": 0.42, "message": "...", "eta_s": 12.0}``), which the
Slicer module parses to drive its progress bar; ``event`` is also ``"note"``, ``"done"`` or
``"error"``.
"""

import json
import sys
import time
from typing import Optional, TextIO


#: An ETA is given only once this share of the work is done and this many seconds have passed: the
#: first steps (loading, preparing) are short against their share of the bar, so an early ETA said
#: "about 136 s left" for a 13 s run.
ETA_AFTER_FRACTION = 0.25
ETA_AFTER_SECONDS = 3.0


class Progress:
    """Reports progress of one job.

    Example::

        progress = Progress(json_lines=True)
        progress.update(0.5, "Running the V-Net")
        progress.done({"output": "seg.nii.gz"})
    """

    def __init__(self, json_lines: bool = False, stream: Optional[TextIO] = None, quiet: bool = False):
        self.json_lines = json_lines
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.start = time.monotonic()

    def _emit(self, record: dict, text: str) -> None:
        if self.json_lines:
            self.stream.write(json.dumps(record) + "\n")
        elif not self.quiet:
            self.stream.write(text + "\n")
        self.stream.flush()

    def eta(self, fraction: float) -> Optional[float]:
        elapsed = time.monotonic() - self.start
        if fraction < ETA_AFTER_FRACTION or elapsed < ETA_AFTER_SECONDS:
            return None
        return elapsed * (1.0 - fraction) / fraction

    def update(self, fraction: float, message: str) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        eta = self.eta(fraction)
        eta_text = f" (about {eta:.0f} s left)" if eta is not None and fraction < 1 else ""
        self._emit({"event": "progress", "fraction": round(fraction, 4), "message": message,
                    "eta_s": None if eta is None else round(eta, 1)},
                   f"[{fraction * 100:5.1f}%] {message}{eta_text}")

    def note(self, message: str) -> None:
        self._emit({"event": "note", "message": message}, f"note: {message}")

    def done(self, result: Optional[dict] = None) -> None:
        elapsed = time.monotonic() - self.start
        self._emit({"event": "done", "elapsed_s": round(elapsed, 2), "result": result or {}},
                   f"done in {elapsed:.1f} s")

    def error(self, message: str) -> None:
        record = {"event": "error", "message": message}
        if self.json_lines:
            self.stream.write(json.dumps(record) + "\n")
            self.stream.flush()
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
