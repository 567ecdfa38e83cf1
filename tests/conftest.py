"""Tests never reach the network: the Hugging Face clients run offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Under pytest-xdist (`-n 2`, `make test`) each worker keeps to one thread, and so do the processes it starts:
# two workers on two cores, not four threads fighting over them.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Without a GPU, Triton kernels run on Triton's CPU interpreter (read when a kernel module is first
# imported, i.e. at the first `batch_omp(..., backend="triton")`).
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
