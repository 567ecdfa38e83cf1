"""`accelerate launch` with 2 CPU processes (gloo), as DESIGN §4 prescribes, for the tests."""

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def launch_two_processes(script, *args, timeout=300):
    """Runs `script args` under 2 processes on a free port; returns the CompletedProcess."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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
        str(port),
        str(script),
        *map(str, args),
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
