"""`mtl train --nproc N`: the same command under PyTorch's own launcher, on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

SHUTDOWN_TIMEOUT_S = 120


def argv_of(ctx) -> list[str]:
    """The train command's options and DATA as given (defaults left out), minus --nproc."""
    out: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == "nproc" or value is None or value == [] or (value is False and not param.secondary_opts):
            continue
        if param.param_type_name == "argument":
            out.append(str(value))
            continue
        flag = param.opts[0]
        if getattr(param, "is_flag", False):
            if value is True:
                out.append(flag)
            elif param.secondary_opts:
                out.append(param.secondary_opts[0])
        elif isinstance(value, (list, tuple)):
            for item in value:
                out += [flag, str(item)]
        else:
            out += [flag, str(value)]
    return out


def launch(nproc: int, train_argv: list[str]) -> int:
    """Run `python -m torch.distributed.run --standalone --nproc_per_node N -m mtlcli train ...`;
    returns its exit code, or 128 + the signal when Ctrl-C or SIGTERM stopped the run.

    torchrun watches the workers: when one fails it stops the others and exits non-zero. Ctrl-C
    reaches torchrun too (same terminal), which passes it on to the workers: they save
    checkpoints/last.pt, so this process waits for them instead of leaving first.
    """
    # on Ctrl-C torchrun waits this long for the workers to save last.pt before it kills them
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           f"--shutdown_timeout={SHUTDOWN_TIMEOUT_S}", "-m", "mtlcli", "train", *train_argv]
    env = dict(os.environ)
    # each process then uses its share of the cores (distributed.set_cpu_threads does the same);
    # set here, torchrun does not print its banner about defaulting it to 1
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.Popen(cmd, env=env)
    received: list[int] = []

    def forward(signum, frame):  # SIGTERM to this process: torchrun passes it on to the workers
        received.append(signum)
        proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # torchrun got the same Ctrl-C from the terminal
                received.append(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    # stopped on a signal: the workers saved last.pt and said how to resume; exit as one process would
    return 128 + received[0] if received and code else code
