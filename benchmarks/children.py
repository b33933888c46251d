"""Run one measured command as a child process: its wall time, CPU time and peak memory.

Peak memory is the child's own high-water mark of resident memory (``VmHWM`` in /proc, polled every
0.2 s; it never goes down). Not ``getrusage(RUSAGE_CHILDREN)``, which is the largest child so far, and
not ``wait4``'s ``ru_maxrss`` alone: Linux carries the parent's resident size into a forked child's
maxrss across ``exec``, so a parent that has imported torch would put a floor under every child.
CPU seconds per wall second tell whether the child got the machine's cores or shared them.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field


@dataclass
class ChildResult:
    argv: list[str]
    returncode: int
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    load1_before: float
    stdout: str
    stderr: str
    rss_samples_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB) every second

    @property
    def cores_used(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s else 0.0


def write_result(path, result: dict) -> None:
    """A benchmark's result as indented JSON, its folder made first (``path`` None: not written)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def load1() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(max_load: float, max_wait_s: float) -> float:
    """Wait until the 1-minute load average is below ``max_load`` (others' jobs, or our previous
    child's tail), at most ``max_wait_s``; returns the load then. ``max_load`` 0: do not wait."""
    end = time.monotonic() + max_wait_s
    while max_load and load1() >= max_load and time.monotonic() < end:
        time.sleep(5)
    return load1()


def _memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak so far) of a running process, in MB; empty once it has gone."""
    found = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found[line[:5]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return found


PRIORITY = {"nice": 0}  # run_benchmark.py --nice: a negative value (root only) puts the measured children
# ahead of other jobs on a shared machine, so that every contender gets the cores alike


def run_child(argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
              sample_rss: bool = False) -> ChildResult:
    before = load1()
    nice = PRIORITY["nice"]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd, text=True,
                                preexec_fn=(lambda: os.nice(nice)) if nice else None)
        samples: list[tuple[float, float]] = []
        peak = [0.0]
        done = threading.Event()

        def poll() -> None:
            last_sample = 0.0
            while not done.wait(0.2):
                memory = _memory_mb(proc.pid)  # a zombie has none: the last reading stands
                peak[0] = max(peak[0], memory.get("VmHWM", 0.0))
                now = time.perf_counter() - t0
                if sample_rss and "VmRSS" in memory and now - last_sample >= 1.0:
                    samples.append((round(now, 1), round(memory["VmRSS"], 1)))
                    last_sample = now

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        poller.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
        out.seek(0)
        err.seek(0)
        # a child gone before the first poll: only ru_maxrss is left (an upper bound, see above)
        max_rss = peak[0] or usage.ru_maxrss / 1024
        return ChildResult(argv, proc.returncode, wall, usage.ru_utime + usage.ru_stime, max_rss,
                           before, out.read(), err.read(), samples)
