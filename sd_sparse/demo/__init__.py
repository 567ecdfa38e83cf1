"""The demos: `sd-sparse demo` (`run_stable_diffusion_demo`, the main job: VQ vs dictionary on a trained VAE's
latents, `stable_diffusion.py`, its grid in `grid.py`) and `sd-sparse demo-patches` (`run_demo`: the same on 8×8
photo patches, no VAE, `patches.py`); `environment.py` chooses the threads and keeps the libraries quiet."""

from .environment import choose_num_threads, physical_cores, process_age, quiet_libraries
from .grid import demo_grid
from .patches import DemoResult, format_table, run_demo
from .stable_diffusion import REFERENCE_HELD_OUT, TRAIN_CROP, describe_vae, run_stable_diffusion_demo

__all__ = [
    "REFERENCE_HELD_OUT",
    "TRAIN_CROP",
    "DemoResult",
    "choose_num_threads",
    "demo_grid",
    "describe_vae",
    "format_table",
    "physical_cores",
    "process_age",
    "quiet_libraries",
    "run_demo",
    "run_stable_diffusion_demo",
]
