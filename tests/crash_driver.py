"""Run `mtl ARGS` in this process with a kill -9 at an exact moment of a file write, or held still
at an exact batch for the test to kill it there.

    python tests/crash_driver.py FAULT -- ARGS...

FAULT is one of
  kill-in-write:NAME:N      SIGKILL halfway through the N-th write of a file named NAME: half the
                            bytes are on disk in its temporary file, the rest never come
  kill-before-rename:NAME:N SIGKILL once the N-th NAME is complete in its temporary file, just
                            before the rename that would put it in place
  memory:MODULE.FUNC:MB     from the first call of FUNC on, the process may map only MB more memory
                            (RLIMIT_AS): the allocations after it fail as on a machine that is full
  clock:STAMP               the wall clock reads STAMP (YYYYmmdd-HHMMSS) for run-folder names, as
                            for processes started in the same second
  hold-after-batch:E:S:MARK once batch S of epoch E has trained, write "epoch E batch S of N" to the
                            file MARK and wait there, in the middle of the epoch, for the test's
                            kill -9 (after 10 minutes without one, exit with code 3)

Nothing in mtlcli is changed: the driver wraps the standard library's open(), os.replace() and
time.strftime(), and the reporter that the training loop calls after each batch, in this process only, and the process really dies (SIGKILL cannot be caught or
cleaned up after).
"""

from __future__ import annotations

import builtins
import os
import signal
import sys
import time


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class DiesMidWrite:
    def __init__(self, f):
        self.f = f

    def write(self, data) -> int:
        self.f.write(bytes(data)[: max(1, len(data) // 2)])
        self.f.flush()
        os.fsync(self.f.fileno())
        die()
        return 0  # never reached

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.f, name)


def limit_memory_from(target: str, mb: int) -> None:
    import importlib
    import resource

    module_name, func_name = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real = getattr(module, func_name)

    def limited(*args, **kwargs):
        with open("/proc/self/status") as f:
            mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (mapped + mb * 2**20, resource.RLIM_INFINITY))
        return real(*args, **kwargs)

    setattr(module, func_name, limited)


def hold_after_batch(epoch: int, step: int, mark: str) -> None:
    from mtlcli.training import run

    real_fit = run.fit

    def fit(parts, epochs, stopper, hooks, *args, **kwargs):
        real_batch_end = hooks.reporter.batch_end

        def batch_end(e, s, steps, *rest):
            real_batch_end(e, s, steps, *rest)
            if (e, s) == (epoch, step):
                with open(f"{mark}.tmp", "w") as f:  # then renamed: the test never reads half a line
                    f.write(f"epoch {e} batch {s} of {steps}\n")
                os.replace(f"{mark}.tmp", mark)
                time.sleep(600)
                os._exit(3)

        hooks.reporter.batch_end = batch_end
        return real_fit(parts, epochs, stopper, hooks, *args, **kwargs)

    run.fit = fit


def install(fault: str) -> None:
    if fault.startswith("clock:"):
        stamp, real_strftime = fault.split(":", 1)[1], time.strftime
        time.strftime = lambda fmt, *t: stamp if fmt == "%Y%m%d-%H%M%S" and not t else real_strftime(fmt, *t)
        return
    if fault.startswith("hold-after-batch:"):
        _, epoch, step, mark = fault.split(":", 3)
        hold_after_batch(int(epoch), int(step), mark)
        return
    if fault.startswith("memory:"):
        _, target, mb = fault.split(":")
        limit_memory_from(target, int(mb))
        return
    kind, name, n = fault.split(":")
    count = [0, int(n)]

    def is_target(path) -> bool:
        base = os.path.basename(os.fspath(path))
        return base == name or base.startswith(f".{name}.tmp-")

    def hit() -> bool:
        count[0] += 1
        return count[0] == count[1]

    if kind == "kill-in-write":
        real_open = builtins.open

        def open_(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if isinstance(file, (str, os.PathLike)) and "w" in mode and is_target(file) and hit():
                return DiesMidWrite(f)
            return f

        builtins.open = open_
    elif kind == "kill-before-rename":
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if is_target(dst) and hit():
                die()
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    else:
        raise SystemExit(f"unknown fault {fault}")


if __name__ == "__main__":
    fault, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: crash_driver.py FAULT -- ARGS"
    install(fault)
    from mtlcli.cli.app import app

    app(args, prog_name="mtl")
