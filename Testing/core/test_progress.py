"""Progress lines say only what has been measured: no ETA before a quarter of the work and 3 s."""

import io
import json
import time

from gliomasuite.progress import Progress


def test_eta_waits_until_something_was_measured():
    stream = io.StringIO()
    progress = Progress(json_lines=True, stream=stream)
    progress.update(0.15, "loading")  # quick first steps: an ETA from them would be wild
    progress.start = time.monotonic() - 10.0
    progress.update(0.2, "still early")
    progress.update(0.5, "half way after 10 s")
    etas = [json.loads(line)["eta_s"] for line in stream.getvalue().splitlines()]
    assert etas[:2] == [None, None]
    assert 9.0 < etas[2] < 11.0
