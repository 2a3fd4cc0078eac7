"""Running a ``gliomasuite`` command in a background process: progress lines in, Cancel out.

Slicer must not freeze while a model runs, and Cancel must really stop it. So the core runs as a
separate process (Slicer's Python running ``python -m gliomasuite --json-progress ...``) in a process
group of its own: Cancel signals the whole group, which matters because Slicer's PythonSlicer is a
launcher that starts the real interpreter as its child, and killing only the launcher would leave
the model running. A reader thread turns the JSON progress lines (see ``gliomasuite.progress``) into
events on a queue; :meth:`BackgroundProcess.poll` hands them to the callbacks in the caller's thread
(the module calls it from a timer, so MRML is only ever touched from Slicer's main thread), and
:meth:`BackgroundProcess.waitForCompletion` does the same in a loop for scripts and tests.

Usage::

    process = BackgroundProcess(
        ["segment", "--t1", t1, "--t1ce", t1ce, "--t2", t2, "--flair", flair, "-o", "labels.nrrd"],
        onProgress=lambda fraction, message: print(f"{fraction:.0%} {message}"),
        onDone=lambda result: print(result["volumes_cm3"]),
        onError=print,
    )
    process.start()
    process.waitForCompletion()     # or: a timer calls process.poll() until it returns False
    process.cancel()                # e.g. from a Cancel button: stops the whole process tree

No Qt here: the timer belongs to the widget.
"""

import collections
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

from gliomasuite.cli import EXIT_CANCELLED
from gliomasuite.errors import GliomaSuiteError

#: The folder holding ``gliomasuite`` (and this package): the child process imports the core from here.
MODULE_DIR = Path(__file__).resolve().parents[1]

# States of a BackgroundProcess, in the order they can happen.
NOT_STARTED = "not started"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"

_EXITED = "exited"  # internal event: the process has ended and its output is fully read


def pythonExecutable() -> str:
    """The Python that runs the core: PythonSlicer inside Slicer, this interpreter elsewhere.

    In Slicer ``sys.executable`` is the application itself (SlicerApp-real), which would start a
    second Slicer rather than run a script. Slicer ships the PythonSlicer launcher in its ``bin``
    folder (next to the application on Linux and Windows, in ``Contents/bin`` on macOS), which sets
    up Slicer's Python environment; SlicerMONAIAuto3DSeg finds it the same way.
    """
    executable = Path(sys.executable)
    if "python" in executable.name.lower():
        return str(executable)
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    for folder in (executable.parent, executable.parent.parent / "bin"):
        if (folder / name).is_file():
            return str(folder / name)
    found = shutil.which("PythonSlicer")
    if found:
        return found
    raise GliomaSuiteError(
        f"Slicer's Python launcher (PythonSlicer) was not found next to {executable} nor on the PATH, "
        "so GliomaSuite cannot start its background process; reinstall Slicer, or run "
        "'python -m gliomasuite segment ...' from a terminal instead.")


def childEnvironment(moduleDir=MODULE_DIR) -> dict:
    """Environment for the child: the one Slicer was started in, with our module folder importable.

    Inside Slicer the child gets Slicer's start-up environment, as ``slicer.util.launchConsoleProcess``
    gives it, because PythonSlicer adds Slicer's own paths itself. Output is unbuffered UTF-8 so each
    progress line arrives as soon as it is printed.
    """
    slicerModule = sys.modules.get("slicer")
    if getattr(slicerModule, "app", None) is not None:
        environment = dict(slicerModule.util.startupEnvironment())
    else:
        environment = dict(os.environ)
    paths = [str(moduleDir)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    environment["PYTHONUNBUFFERED"] = "1"
    environment["PYTHONIOENCODING"] = "utf-8"
    return environment


class BackgroundProcess:
    """One ``gliomasuite`` command running in a process tree of its own.

    Callbacks run in the thread that calls :meth:`poll` or :meth:`waitForCompletion`:

    * ``onProgress(fraction, message)`` for each progress line (fraction 0..1);
    * ``onNote(message)`` for remarks the user should read (a resampled volume, a missing channel);
    * ``onDone(result)`` once, when the command succeeded (``result`` is its summary dict);
    * ``onError(message)`` once, when it failed: the core's own sentence, or what its crash left on
      stderr when it could not say more;
    * ``onFinished(state)`` last, always: ``"done"``, ``"failed"`` or ``"cancelled"``.
    """

    #: Seconds between asking the tree to stop (SIGTERM: the core says "Cancelled" and exits) and
    #: killing whatever is left of it (SIGKILL).
    CANCEL_GRACE_S = 5.0
    #: Lines of stderr kept to explain a process that died without an error event.
    STDERR_LINES_KEPT = 20

    def __init__(self, arguments: List[str],
                 onProgress: Optional[Callable[[float, str], None]] = None,
                 onNote: Optional[Callable[[str], None]] = None,
                 onDone: Optional[Callable[[dict], None]] = None,
                 onError: Optional[Callable[[str], None]] = None,
                 onFinished: Optional[Callable[[str], None]] = None,
                 python: Optional[str] = None, environment: Optional[dict] = None):
        self.arguments = [str(argument) for argument in arguments]
        self.onProgress, self.onNote, self.onDone = onProgress, onNote, onDone
        self.onError, self.onFinished = onError, onFinished
        self.python = python or pythonExecutable()
        self.environment = environment if environment is not None else childEnvironment()

        self.state = NOT_STARTED
        self.fraction = 0.0
        self.message = ""
        self.notes: List[str] = []
        self.result: Optional[dict] = None
        self.errorMessage = ""
        self.returnCode: Optional[int] = None
        self.startTime: Optional[float] = None
        self.endTime: Optional[float] = None

        self._popen = None
        self._events = queue.Queue()
        self._stderrTail = collections.deque(maxlen=self.STDERR_LINES_KEPT)
        self._stderrReader = None
        self._cancelRequested = False
        self._killTimer = None

    @property
    def command(self) -> List[str]:
        return [self.python, "-m", "gliomasuite", "--json-progress", *self.arguments]

    @property
    def pid(self) -> Optional[int]:
        """Process ID of the top of the tree (on POSIX also its process group ID)."""
        return self._popen.pid if self._popen else None

    @property
    def isRunning(self) -> bool:
        return self.state == RUNNING

    def start(self) -> "BackgroundProcess":
        if self.state != NOT_STARTED:
            raise RuntimeError("This BackgroundProcess was already started; create a new one to run again.")
        if os.name == "nt":
            options = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
        else:
            options = {"start_new_session": True}  # its own session and process group: see cancel()
        logging.info("GliomaSuite: starting %s", subprocess.list2cmdline(self.command))
        try:
            self._popen = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=self.environment, text=True, encoding="utf-8", errors="replace", bufsize=1, **options)
        except OSError as error:
            raise GliomaSuiteError(
                f"Could not start the GliomaSuite process with {self.python} ({error.strerror or error}); "
                "check that this Python exists and can be run.") from error
        self.state = RUNNING
        self.startTime = time.monotonic()
        self._stderrReader = threading.Thread(target=self._readStderr, name="GliomaSuite stderr", daemon=True)
        self._stderrReader.start()
        threading.Thread(target=self._readStdout, name="GliomaSuite stdout", daemon=True).start()
        return self

    def poll(self, timeout: float = 0.0) -> bool:
        """Hand all queued events to the callbacks; True while the process may still send more.

        ``timeout`` > 0 first waits up to that many seconds for an event to arrive.
        """
        block = timeout > 0
        while self.state == RUNNING:
            try:
                event = self._events.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                break
            block = False  # later events only if already queued
            self._dispatch(event)
        return self.state == RUNNING

    def waitForCompletion(self, timeout: Optional[float] = None) -> str:
        """Run the callbacks until the process has ended; returns the final state.

        After ``timeout`` seconds the process tree is cancelled and :class:`GliomaSuiteError` raised.
        """
        if self.state == NOT_STARTED:
            raise RuntimeError("Call start() before waitForCompletion().")
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll(timeout=0.1):
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                while self.poll(timeout=0.1):
                    pass
                raise GliomaSuiteError(
                    f"The GliomaSuite process did not finish within {timeout:.0f} s and was stopped; "
                    "try a smaller window, the GPU, or the fast setting without test-time augmentation.")
        return self.state

    def cancel(self) -> None:
        """Stop the whole process tree; returns at once.

        The tree first gets SIGTERM, on which the core reports "Cancelled", writes nothing and exits;
        whatever is still alive :attr:`CANCEL_GRACE_S` seconds later is killed. On Windows the tree
        is ended with ``taskkill /T /F``. :meth:`poll` then reports the state ``"cancelled"``.
        """
        if self.state != RUNNING or self._cancelRequested:
            return
        self._cancelRequested = True
        logging.info("GliomaSuite: cancelling process %s", self.pid)
        if os.name == "nt":
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(self.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            return
        self._signalGroup(signal.SIGTERM)
        self._killTimer = threading.Timer(self.CANCEL_GRACE_S, self._signalGroup, args=(signal.SIGKILL,))
        self._killTimer.daemon = True
        self._killTimer.start()

    # ---------------------------------------------------------------------------------------------

    def _signalGroup(self, signalNumber) -> None:
        try:
            os.killpg(self._popen.pid, signalNumber)
        except (ProcessLookupError, PermissionError):
            pass  # the group is already gone

    def _readStdout(self) -> None:
        # Runs in its own thread: only puts events on the queue, never calls back.
        for line in self._popen.stdout:
            self._events.put(_parseLine(line))
        self._popen.stdout.close()
        returnCode = self._popen.wait()
        self._stderrReader.join(timeout=5)  # so a crash's last words are in the tail when we report
        self._events.put({"event": _EXITED, "returncode": returnCode})

    def _readStderr(self) -> None:
        for line in self._popen.stderr:
            line = line.rstrip()
            if line:
                self._stderrTail.append(line)
                logging.debug("GliomaSuite process: %s", line)
        self._popen.stderr.close()

    def _dispatch(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.fraction = float(event.get("fraction") or 0.0)
            self.message = str(event.get("message") or "")
            if self.onProgress:
                self.onProgress(self.fraction, self.message)
        elif kind == "note":
            message = str(event.get("message") or "")
            self.notes.append(message)
            logging.info("GliomaSuite: %s", message)
            if self.onNote:
                self.onNote(message)
        elif kind == "done":
            self.result = event.get("result") or {}
        elif kind == "error":
            self.errorMessage = str(event.get("message") or "")
        elif kind == _EXITED:
            self._finish(event["returncode"])
        else:  # output that is not ours (a library printing to stdout): keep it for the log only
            logging.info("GliomaSuite process: %s", event.get("message", ""))

    def _finish(self, returnCode: int) -> None:
        self.returnCode = returnCode
        self.endTime = time.monotonic()
        if self._killTimer:
            self._killTimer.cancel()
        if self._cancelRequested:
            if os.name != "nt":
                self._signalGroup(signal.SIGKILL)  # any straggler that had closed its end of the pipe
            self.state = CANCELLED
        elif returnCode == EXIT_CANCELLED:  # stopped from outside (Ctrl+C in a terminal, a SIGTERM)
            self.state = CANCELLED
        elif returnCode == 0 and self.result is not None:
            self.state = DONE
        else:
            self.state = FAILED
            if not self.errorMessage:
                self.errorMessage = self._crashMessage(returnCode)
        logging.info("GliomaSuite: process %s %s (exit status %s)", self.pid, self.state, returnCode)
        try:
            if self.state == DONE and self.onDone:
                self.onDone(self.result)
            if self.state == FAILED and self.onError:
                self.onError(self.errorMessage)
        finally:  # whatever a callback did, the caller learns that the process is over
            if self.onFinished:
                self.onFinished(self.state)

    def _crashMessage(self, returnCode: int) -> str:
        """A sentence for a process that ended without saying why (a crash, a kill, a bad argument)."""
        if returnCode is not None and returnCode < 0:
            what = f"was stopped by signal {-returnCode}"
            if -returnCode == signal.SIGKILL:
                what += " (often the system running out of memory; close other programs or use the GPU)"
        else:
            what = f"stopped with exit status {returnCode}"
        lastWords = " | ".join(list(self._stderrTail)[-3:])
        detail = f"; its last output was: {lastWords}" if lastWords else ""
        return f"The GliomaSuite process {what} without finishing{detail}. The full output is in Slicer's log."


def _parseLine(line: str) -> dict:
    """One stdout line as an event: our JSON progress objects as they are, anything else as text."""
    text = line.strip()
    if text.startswith("{"):
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if isinstance(event, dict) and "event" in event:
            return event
    return {"event": "output", "message": text}


class OneJobAtATime:
    """What a logic that runs one background job at a time offers the widget and scripts.

    The logic keeps its running job in ``self._job`` (anything with a ``process``, a
    :class:`BackgroundProcess`) and the outcome of the last finished one in ``self.lastOutcome``.
    """

    _job = None
    lastOutcome = None

    @property
    def isRunning(self) -> bool:
        return self._job is not None

    def poll(self) -> bool:
        """Deliver the running job's progress and result; True while it is still running."""
        return self._job.process.poll() if self._job else False

    def cancel(self) -> None:
        """Stop the running job's whole process tree; the scene is left as it was."""
        if self._job:
            self._job.process.cancel()

    def waitForCompletion(self, timeout: Optional[float] = None):
        """Block until the running job has ended (for scripts and tests); returns its outcome."""
        if self._job:
            self._job.process.waitForCompletion(timeout)
        return self.lastOutcome

    def _stopJob(self) -> None:
        """Cancel a running job and wait until its process tree is gone (module or scene close)."""
        if self._job:
            self._job.process.cancel()
            self._job.process.waitForCompletion(timeout=BackgroundProcess.CANCEL_GRACE_S + 5)
