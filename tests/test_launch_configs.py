"""configs/accelerate/*.yaml: each loads and resolves through `accelerate launch`'s own code; 2 CPU processes train.

Multi-GPU, multi-node, FSDP and DeepSpeed runs need GPUs (and DeepSpeed installed): here they are
checked as far as the launcher's argument handling and the plugins built from its environment.
"""

import os
import sys
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env
from launch import run_with_deadline

from sd_sparse import SparseAutoencoder

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
EXPECTED = {
    "cpu_2_processes.yaml": (DistributedType.MULTI_GPU, 2, 1),
    "multi_gpu.yaml": (DistributedType.MULTI_GPU, 8, 1),
    "multi_node.yaml": (DistributedType.MULTI_GPU, 16, 2),
    "fsdp.yaml": (DistributedType.FSDP, 8, 1),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 8, 1),
}


def resolve(name, *flags):
    """`accelerate launch --config_file configs/accelerate/<name> FLAGS train/train_dlvae.py` up to the launch."""
    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(CONFIGS / name), *flags, "train/train_dlvae.py"])
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults


def test_every_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerates_loader(name):
    config = load_config_from_file(str(CONFIGS / name))
    assert isinstance(config, ClusterConfig)
    assert config == ClusterConfig.from_yaml_file(str(CONFIGS / name))
    distributed_type, processes, machines = EXPECTED[name]
    assert (config.distributed_type, config.num_processes, config.num_machines) == (
        distributed_type,
        processes,
        machines,
    )
    args, _ = resolve(name)
    assert (args.num_processes, args.num_machines) == (processes, machines)
    assert args.multi_gpu == (distributed_type == DistributedType.MULTI_GPU)
    assert args.use_fsdp == (distributed_type == DistributedType.FSDP)
    assert args.use_deepspeed == (distributed_type == DistributedType.DEEPSPEED)


def test_command_line_flags_win_over_the_files():
    """docs/training.md's "--num_processes changes it": the resolved launch arguments, not accelerate's own mapping of
    them to environment variables (accelerate 1.16 sets CUDA_VISIBLE_DEVICES only when it sees a GPU backend)."""
    args, _ = resolve("multi_gpu.yaml", "--num_processes", "4", "--gpu_ids", "0,1,2,3")
    prepare_multi_gpu_env(args)
    assert (args.num_processes, args.nproc_per_node, args.gpu_ids) == (4, "4", "0,1,2,3")
    # docs/training.md's command for the second machine: 8 processes there, rank 1 of 2, rendezvous at rank 0's address
    args, _ = resolve("multi_node.yaml", "--machine_rank", "1", "--main_process_ip", "10.1.2.3")
    prepare_multi_gpu_env(args)
    assert (args.nproc_per_node, args.nnodes, args.node_rank) == ("8", "2", 1)
    assert args.rdzv_endpoint == "10.1.2.3:29500"


def test_fsdp_config_builds_the_intended_plugin(monkeypatch):
    args, _ = resolve("fsdp.yaml")
    for key, value in prepare_multi_gpu_env(args).items():
        if key.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.auto_wrap_policy is None  # one FSDP unit per model
    assert plugin.ignored_modules == "bottleneck"
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    assert not plugin.cpu_ram_efficient_loading and not plugin.activation_checkpointing
    assert "bottleneck" in dict(SparseAutoencoder().named_children())  # what the ignored-modules pattern names


def test_deepspeed_config_builds_a_zero2_plugin_without_deepspeed(monkeypatch):
    monkeypatch.chdir(ROOT)  # the config names its JSON relative to the repository root
    args, defaults = resolve("deepspeed_zero2.yaml")
    # what `accelerate launch` does before its DeepSpeed launcher
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision("bf16")  # the script's --mixed_precision fills the JSON's "auto"
    config = plugin.deepspeed_config
    assert plugin.zero_stage == 2 and config["zero_optimization"]["stage"] == 2
    # no DataLoader goes through prepare(): the micro batch must be a number, not "auto"
    assert isinstance(config["train_micro_batch_size_per_gpu"], int)
    assert config["bf16"]["enabled"] is True and config["fp16"]["enabled"] is False


def test_two_cpu_processes_train_with_the_cpu_config(tmp_path):
    """docs/training.md's CPU command: train/train_dlvae.py under cpu_2_processes.yaml, tiny settings, 2 steps."""
    out = tmp_path / "run"
    tiny = "--num_atoms 32 --sparsity 3 --hidden_channels 32 --latent_channels 8 --train_batch_size 4"
    tiny += " --resolution 16 --max_images 4 --max_train_steps 2"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / "cpu_2_processes.yaml"),
        str(ROOT / "train" / "train_dlvae.py"),
        *tiny.split(),
        "--output_dir",
        str(out),
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = run_with_deadline(command, env=env, timeout=300)
    ranks = "\n".join(line for line in done.stderr.splitlines() if line.startswith("[rank"))
    assert done.returncode == 0, (ranks or done.stderr)[-4000:]
    # each process saved its own random state: two processes ran as one world, not two worlds of one
    assert sorted(p.name for p in (out / "checkpoint-2").glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    model = SparseAutoencoder.from_pretrained(out)
    with torch.no_grad():
        sample = model(torch.zeros(1, 3, 16, 16)).sample
    assert sample.shape == (1, 3, 16, 16) and torch.isfinite(sample).all()
