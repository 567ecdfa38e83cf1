"""Two CPU ranks (gloo) for the tests, as DESIGN §4 prescribes: `accelerate launch` of a script, or two
spawned processes running a function. Both have a deadline: a hung rank fails its test (with the ranks'
Python stacks in the captured output) instead of stalling the suite."""

import datetime
import faulthandler
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(script, *args, timeout=300):
    """Runs `script args` under `accelerate launch` with 2 processes on a free port; returns the
    CompletedProcess (see `run_with_deadline`)."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(script),
        *map(str, args),
    ]
    return run_with_deadline(command, env={**os.environ, "ACCELERATE_USE_CPU": "true"}, timeout=timeout)


def run_with_deadline(command, env, timeout=300):
    """`subprocess.run(command, capture_output=True, text=True)` in ROOT, whose whole process group is
    killed past `timeout` seconds (then `subprocess.TimeoutExpired` is raised). A launcher's ranks hold
    its output pipes: `subprocess.run(timeout=...)` would kill the launcher alone and wait on them forever."""
    with subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr) from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _rank_main(rank, worker, port, args, timeout):
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent asks for the stacks of a hung rank
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=timeout))
    worker(rank, *args)
    dist.barrier()
    # the rank's work is done and its results written: leave without the process-group teardown, which
    # can hang at exit (pytorch/pytorch#75097); the collectives above have already completed on both ranks
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_two_ranks(worker, *args, timeout=120, attempts=2):
    """Runs `worker(rank, *args)` in 2 spawned processes joined in one gloo process group (collectives
    time out after `timeout` s). Raises at once if a rank fails. Ranks that have not finished within
    `timeout` seconds have their Python stacks printed and are killed; the run is then tried again on a
    new port (with a warning), up to `attempts` runs in all. The data and seeds are the same each time,
    so a deterministic hang in the code under test fails every attempt. `worker` must be a
    module-level function (it is pickled)."""
    for attempt in range(1, attempts + 1):
        context = mp.start_processes(
            _rank_main, args=(worker, free_port(), args, timeout), nprocs=2, join=False, start_method="spawn"
        )
        deadline = time.monotonic() + timeout
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                break
        else:
            return
        for process in context.processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGUSR1)
        time.sleep(2)
        for process in context.processes:
            process.kill()
            process.join()
        message = f"2 ranks of {worker.__name__} did not finish within {timeout} s (attempt {attempt} of {attempts}; stacks above)"
        if attempt == attempts:
            raise AssertionError(message)
        warnings.warn(message, stacklevel=2)
