"""`mtl train --nproc N`: the same command under PyTorch's own launcher, on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from mtlcli.training.interrupt import LAUNCHER_SAYS_RESUME

SHUTDOWN_TIMEOUT_S = 120
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def launch(nproc: int, train_argv: list[str]) -> int:
    """Run torch.distributed.run (--standalone, N processes, `-m mtlcli train ...`) through
    `mtlcli.training.torchrun_child`; returns its exit code, 128 + the signal when Ctrl-C or
    SIGTERM stopped the run.

    torchrun watches the workers: when one fails it stops the others and exits non-zero. The
    launcher runs in a session of its own, so Ctrl-C in the terminal reaches this process only,
    whatever the moment: each SIGINT/SIGTERM is passed on from here, the workers finish their batch
    and save checkpoints/last.pt, and this process waits for them instead of leaving first.
    """
    # on a stop request torchrun waits this long for the workers to save last.pt before it kills them
    cmd = [sys.executable, "-m", "mtlcli.training.torchrun_child", "--standalone", f"--nproc_per_node={nproc}",
           f"--shutdown_timeout={SHUTDOWN_TIMEOUT_S}", "-m", "mtlcli", "train", *train_argv]
    env = {**os.environ, LAUNCHER_SAYS_RESUME: "1"}
    # each process then uses its share of the cores (distributed.set_cpu_threads does the same);
    # set here, torchrun does not print its banner about defaulting it to 1
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    received: list[int] = []
    proc: subprocess.Popen | None = None

    def forward(signum, frame):
        received.append(signum)
        if proc is not None and proc.returncode is None:
            # a closed terminal (SIGHUP) stops the run like SIGTERM: the workers save last.pt
            proc.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    previous = {sig: signal.signal(sig, forward) for sig in (*STOP_SIGNALS, signal.SIGHUP)}
    # the launcher starts with the signals blocked (it unblocks them where it is ready for them);
    # one that comes meanwhile is delivered here once the launcher exists, and forwarded
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        try:
            proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # stopped on a signal: the workers saved last.pt and said how to resume; exit as one process would
    return 128 + received[0] if received and code else code
