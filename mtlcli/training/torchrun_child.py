"""torch.distributed.run as `mtl train --nproc N` runs it: `python -m mtlcli.training.torchrun_child ARGS`.

torchrun's own answer to Ctrl-C is to raise an exception that ends in a traceback and exit code 1,
even when the workers stopped cleanly. Here this process passes SIGINT and SIGTERM on to the workers
itself and maps the outcome to 128 + the signal. How the signals travel:

- `launch` starts this process with SIGINT and SIGTERM blocked, so a signal that comes while Python
  is still starting waits instead of ending it with a traceback. They stay blocked in every thread
  here; one thread takes them with sigwait and sends each on to the workers.
- The workers inherit the blocked signals from this process too: a signal that arrives while a
  worker is still importing waits until `StopSignals` takes over (and then ends it at once, as it
  would a single process still being set up).
- A worker that starts after the first signal gets that signal as soon as it exists, so a stop
  request made while torchrun is still starting the workers is not lost.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SIGNALS = {signal.SIGINT, signal.SIGTERM}


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (torchrun's workers)."""
    if not Path("/proc/self").is_dir():  # not Linux
        listed = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(p) for p in listed.split()]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (name) ": the name may hold spaces
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


class Relay:
    """Takes SIGINT/SIGTERM (blocked in every thread) and sends each on to the workers."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._told: set[int] = set()  # workers that have the first signal
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._wait, name="mtl-signal-relay", daemon=True).start()

    def _wait(self) -> None:
        while True:
            signum = signal.sigwait(SIGNALS)
            with self._lock:
                if not self.received:
                    # from now on the workers end on purpose: torchrun's failure report would be noise
                    logging.disable(logging.CRITICAL)
                    threading.Thread(target=self._tell_late_workers, name="mtl-signal-late", daemon=True).start()
                self.received.append(signum)
                self._send(signum, children(os.getpid()))  # a second one too: it means "stop at once"

    def _tell_late_workers(self) -> None:
        """Workers that torchrun starts after the first signal get it as soon as they exist."""
        while True:
            time.sleep(0.1)
            with self._lock:
                self._send(self.received[0], [p for p in children(os.getpid()) if p not in self._told])

    def _send(self, signum: int, pids: list[int]) -> None:
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
            self._told.add(pid)


def main(argv: list[str]) -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # already blocked when started by `launch`
    # torchrun leaves SIGINT and SIGTERM to the relay (it would turn them into a traceback)
    os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = "SIGHUP,SIGQUIT"
    relay = Relay()
    relay.start()
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv)
    except ChildFailedError as exc:
        if relay.received:  # the workers stopped on the signal, saved, and said how to resume
            return 128 + relay.received[0]
        print(exc, file=sys.stderr)  # torchrun's table of the first failure, without its traceback
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
