"""``--nproc N``: relaunch this command as N torchrun processes on this machine."""

from __future__ import annotations

import sys

from advbench.errors import UserError


def run_torchrun(nproc: int, args: list[str]) -> int:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m advbench ARGS``; its exit code.

    Ctrl-C reaches torchrun and its processes from the terminal; this process waits while they save their
    state, and passes a SIGTERM it receives on to torchrun. torchrun's agent writes its log folder to a
    temporary folder (``--log-dir``) that is removed when it ends: without one it leaves a ``torchelastic_*``
    folder in the system's temporary directory, outside ``--out``.
    """
    import shutil
    import signal
    import subprocess
    import tempfile

    from advbench.core.distributed import env_world_size

    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    if env_world_size() > 1:
        raise UserError("--nproc cannot be used inside torchrun; torchrun already chose the number of processes")
    logs = tempfile.mkdtemp(prefix="advbench-torchrun-")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           f"--log-dir={logs}", "-m", "advbench", *args]
    try:
        proc = subprocess.Popen(cmd)
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))  # pass it on
        interrupted = False
        try:
            while True:
                try:
                    code = proc.wait()
                    break
                except KeyboardInterrupt:  # torchrun and its processes got the same Ctrl-C: wait while they save
                    interrupted = True
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    if interrupted and code != 0:
        return 130
    return 128 - code if code < 0 else code  # killed by a signal: the shell's 128 + signal number
