"""The flags of diffusers' examples in the trainer: lr schedule, clipping, EMA, epochs, gradient
checkpointing, TF32, trackers, --help."""

import subprocess
import sys

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from test_training import ROOT, TINY, run, states_equal

from sd_sparse import SparseAutoencoder
from sd_sparse.training import build_parser


@pytest.fixture
def logged(monkeypatch):
    """Every `accelerator.log` call of the run, as {step: values}."""
    history = {}

    def log(self, values, step=None, log_kwargs=None):
        history[step] = dict(values)

    monkeypatch.setattr(Accelerator, "log", log)
    return history


def test_lr_scheduler_with_warmup_sets_each_steps_learning_rate(tmp_path, logged):
    run(
        [
            *TINY,
            "--gan",
            "--discriminator_layers",
            "2",
            "--discriminator_start_step",
            "2",
            "--lr_scheduler",
            "linear",
            "--lr_warmup_steps",
            "4",
            "--learning_rate",
            "1e-3",
            "--max_train_steps",
            "6",
            "--validation_steps",
            "100",
            "--output_dir",
            str(tmp_path),
        ]
    )
    # linear warmup over 4 steps (the first update at lr 0, as diffusers), then linear decay to 0 at step 6
    assert [logged[s]["lr"] for s in range(1, 7)] == pytest.approx([1e-3 * f for f in (0, 0.25, 0.5, 0.75, 1, 0.5)])
    # the discriminator's own schedule starts with it (steps 3-6), warming up over its first 4 steps
    assert [logged[s]["d_lr"] for s in range(3, 7)] == pytest.approx([1e-3 * f for f in (0, 0.25, 0.5, 0.75)])
    assert "d_lr" not in logged[2]
    state = torch.load(tmp_path / "checkpoint-6" / "scheduler.bin", weights_only=False)
    assert state["last_epoch"] == 6 and state["_last_lr"] == pytest.approx([0.0])


def test_default_scheduler_is_constant(tmp_path, logged):
    run([*TINY, "--max_train_steps", "3", "--validation_steps", "100", "--output_dir", str(tmp_path)])
    assert [logged[s]["lr"] for s in (1, 2, 3)] == [1e-4] * 3
    assert "grad_norm" not in logged[1]  # no clipping by default


def test_resume_with_scheduler_ema_and_clipping_is_exact(tmp_path):
    # resumed mid-warmup: a scheduler restarted from scratch would give other learning rates
    common = [
        *TINY,
        "--gan",
        "--discriminator_layers",
        "2",
        "--discriminator_start_step",
        "1",
        "--lr_scheduler",
        "constant_with_warmup",
        "--lr_warmup_steps",
        "4",
        "--use_ema",
        "--ema_decay",
        "0.9",
        "--max_grad_norm",
        "0.5",
        "--checkpointing_steps",
        "3",
        "--validation_steps",
        "100",
    ]
    straight, straight_disc = run([*common, "--max_train_steps", "6", "--output_dir", str(tmp_path / "a")])
    run([*common, "--max_train_steps", "3", "--output_dir", str(tmp_path / "b")])
    resumed, resumed_disc = run(
        [*common, "--max_train_steps", "6", "--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", "latest"]
    )
    assert states_equal(straight.state_dict(), resumed.state_dict())
    assert states_equal(straight_disc.state_dict(), resumed_disc.state_dict())
    a, b = tmp_path / "a" / "checkpoint-6", tmp_path / "b" / "checkpoint-6"
    for name in ("scheduler.bin", "scheduler_1.bin", "custom_checkpoint_0.pkl"):
        sa, sb = (torch.load(d / name, weights_only=False) for d in (a, b))
        assert sa.keys() == sb.keys(), name
        for key in sa:
            if key == "shadow_params":
                assert all(torch.equal(x, y) for x, y in zip(sa[key], sb[key]))
            else:
                assert sa[key] == sb[key], (name, key)


def test_ema_weights_are_validated_and_saved_with_the_trained_buffers(tmp_path, monkeypatch):
    from sd_sparse.training import trainer

    validated = {}
    real_validate = trainer.validate

    def validate(model, images, args, step, *rest):
        validated[step] = {k: v.clone() for k, v in model.state_dict().items()}
        return real_validate(model, images, args, step, *rest)

    monkeypatch.setattr(trainer, "validate", validate)
    out = tmp_path / "ema"
    common = [*TINY, "--bottleneck_type", "vq", "--max_train_steps", "4", "--validation_steps", "2"]
    model, _ = run([*common, "--use_ema", "--ema_decay", "0.5", "--output_dir", str(out)])
    raw = load_file(out / "checkpoint-4" / "model.safetensors")  # the trained weights at the last step
    ema = torch.load(out / "checkpoint-4" / "custom_checkpoint_0.pkl", weights_only=False)
    assert ema["optimization_step"] == 4 and ema["decay"] == 0.5
    saved = SparseAutoencoder.from_pretrained(out)
    assert states_equal(saved.state_dict(), model.state_dict())
    names = [name for name, _ in saved.named_parameters()]
    for name, shadow in zip(names, ema["shadow_params"]):
        assert torch.equal(saved.state_dict()[name], shadow), name
    trained = [n for n, p in saved.named_parameters() if p.requires_grad]
    assert any(not torch.equal(saved.state_dict()[n], raw[n]) for n in trained)  # EMA ≠ raw weights
    # buffers (VQ EMA statistics) and the VQ codebook (no gradient: copied) are the trained ones
    for name, buffer in saved.named_buffers():
        assert torch.equal(buffer, raw[name]), name
    assert torch.equal(saved.state_dict()["bottleneck.codebook"], raw["bottleneck.codebook"])
    assert states_equal(validated[4], saved.state_dict())  # validation saw the EMA weights
    # the EMA (and validating with it at step 2) leaves the training itself untouched
    run([*common, "--output_dir", str(tmp_path / "plain")])
    assert states_equal(load_file(tmp_path / "plain" / "checkpoint-4" / "model.safetensors"), raw)
    # foreach gives the same average
    foreach, _ = run([*common, "--use_ema", "--ema_decay", "0.5", "--foreach_ema", "--output_dir", str(tmp_path / "f")])
    for key, value in foreach.state_dict().items():
        assert torch.allclose(value.float(), model.state_dict()[key].float(), atol=1e-6), key


def test_max_grad_norm_clips_every_update(tmp_path, monkeypatch, logged):
    seen = []
    adam_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    run(
        [
            *TINY,
            "--max_grad_norm",
            "1e-3",
            "--max_train_steps",
            "3",
            "--validation_steps",
            "100",
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert len(seen) == 3
    assert all(logged[s]["grad_norm"] > 1e-3 for s in (1, 2, 3))  # the norm before clipping was larger
    assert all(norm <= 1e-3 * (1 + 1e-4) for norm in seen)  # the optimizer saw the clipped gradients


def test_num_train_epochs_derives_the_steps(tmp_path):
    base = [*TINY, "--train_batch_size", "3", "--repeats", "2", "--validation_steps", "100"]
    base += ["--checkpointing_steps", "100"]
    # 4 photographs, 1 held out, 2 crops of each of the other 3 an epoch, 3 crops a step: 2 steps an epoch
    args = build_parser().parse_args([*base, "--num_train_epochs", "3", "--output_dir", str(tmp_path / "a")])
    from sd_sparse.training import train

    train(args)
    assert args.max_train_steps == 6 and (tmp_path / "a" / "checkpoint-6").is_dir()
    # with 2 accumulation steps an optimizer step takes 6 crops: 1 step an epoch
    args = build_parser().parse_args(
        [*base, "--num_train_epochs", "3", "--gradient_accumulation_steps", "2", "--output_dir", str(tmp_path / "b")]
    )
    train(args)
    assert args.max_train_steps == 3 and (tmp_path / "b" / "checkpoint-3").is_dir()
    # --max_train_steps wins
    args = build_parser().parse_args(
        [*base, "--num_train_epochs", "3", "--max_train_steps", "2", "--output_dir", str(tmp_path / "c")]
    )
    train(args)
    assert args.max_train_steps == 2 and (tmp_path / "c" / "checkpoint-2").is_dir()
    assert build_parser().parse_args([]).max_train_steps is None
    with pytest.raises(ValueError, match="--num_train_epochs must be >= 1"):
        run([*base, "--num_train_epochs", "0", "--output_dir", str(tmp_path / "d")])


VQGAN_TINY = [
    *TINY,
    "--architecture",
    "vqgan",
    "--block_out_channels",
    "32",
    "32",
    "--validation_steps",
    "100",
    "--max_train_steps",
    "2",
]


def test_gradient_checkpointing_gives_the_same_training(tmp_path, logged):
    plain, _ = run([*VQGAN_TINY, "--output_dir", str(tmp_path / "a")])
    plain_losses = [logged[s]["loss"] for s in (1, 2)]
    logged.clear()
    checkpointed, _ = run([*VQGAN_TINY, "--gradient_checkpointing", "--output_dir", str(tmp_path / "b")])
    assert checkpointed.encoder.gradient_checkpointing and checkpointed.decoder.gradient_checkpointing
    assert [logged[s]["loss"] for s in (1, 2)] == pytest.approx(plain_losses, rel=1e-5)
    for key, value in plain.state_dict().items():
        assert torch.allclose(value, checkpointed.state_dict()[key], atol=1e-5), key


def test_gradient_checkpointing_on_lasers_gives_the_same_training(tmp_path, logged):
    short = [*TINY, "--max_train_steps", "6", "--validation_steps", "3"]
    plain, _ = run([*short, "--output_dir", str(tmp_path / "a")])
    plain_losses = [logged[s]["loss"] for s in sorted(logged)]
    assert len(plain_losses) == 6
    logged.clear()
    checkpointed, _ = run([*short, "--gradient_checkpointing", "--output_dir", str(tmp_path / "b")])
    assert checkpointed.encoder.gradient_checkpointing and checkpointed.decoder.gradient_checkpointing
    assert [logged[s]["loss"] for s in sorted(logged)] == pytest.approx(plain_losses, rel=1e-5)
    for key, value in plain.state_dict().items():
        assert torch.allclose(value, checkpointed.state_dict()[key], atol=1e-5), key


def test_allow_tf32_sets_the_backends(tmp_path):
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    common = [*TINY, "--max_train_steps", "1", "--validation_steps", "100"]
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        run([*common, "--output_dir", str(tmp_path / "a")])
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        run([*common, "--allow_tf32", "--output_dir", str(tmp_path / "b")])
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_report_to_tensorboard_writes_under_logging_dir_and_project_name(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "tb"
    run(
        [
            *TINY,
            "--report_to",
            "tensorboard",
            "--tracker_project_name",
            "my_project",
            "--logging_dir",
            "my_logs",
            "--max_train_steps",
            "2",
            "--validation_steps",
            "2",
            "--output_dir",
            str(out),
        ]
    )
    events = list((out / "my_logs" / "my_project").rglob("events.out.tfevents.*"))
    assert events


@pytest.mark.filterwarnings("ignore:`log_with=wandb`")
def test_tracker_project_name_and_logging_dir_reach_accelerate(tmp_path, monkeypatch):
    seen = {}

    def init_trackers(self, project_name, config=None, init_kwargs=None):
        seen.update(project_name=project_name, logging_dir=str(self.logging_dir), config=config)

    monkeypatch.setattr("sd_sparse.training.arguments.check_trackers", lambda report_to: None)  # "wandb is installed"
    monkeypatch.setattr(Accelerator, "init_trackers", init_trackers)
    monkeypatch.setattr(Accelerator, "log", lambda self, values, step=None, log_kwargs=None: None)
    monkeypatch.setattr("accelerate.accelerator.filter_trackers", lambda log_with, logging_dir=None: [])
    out = tmp_path / "o"
    common = [*TINY, "--report_to", "wandb", "--max_train_steps", "1", "--validation_steps", "100"]
    run([*common, "--output_dir", str(out)])
    assert seen["project_name"] == "sd_sparse" and seen["logging_dir"] == str(out / "logs")
    run([*common, "--tracker_project_name", "p", "--logging_dir", "l", "--output_dir", str(out)])
    assert seen["project_name"] == "p" and seen["logging_dir"] == str(out / "l")
    assert seen["config"]["tracker_project_name"] == "p"


def test_report_to_without_its_package_is_one_line_exit_2(tmp_path):
    # a tracker package that cannot be imported: hide tensorboard (and tensorboardX) from find_spec
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name.startswith('tensorboard') else real(name, *a)\n"
        "from sd_sparse.training import main\n"
        "main(sys.argv[1:])\n"
    )
    out = tmp_path / "o"
    done = subprocess.run(
        [sys.executable, "-c", code, *TINY, "--report_to", "tensorboard", "--output_dir", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].endswith(
        "--report_to tensorboard needs the tensorboard package: pip install 'sd_sparse[tensorboard]'"
    ), done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_help_lists_every_flag_with_its_default():
    parser = build_parser()
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"
    text = subprocess.run(
        [sys.executable, str(ROOT / "train" / "train_dlgan.py"), "--help"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    entries, current = {}, None  # flag -> its help text, from the options listing
    for line in text.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif current is not None and line.startswith("   "):
            entries[current] += " " + line.strip()
        else:
            current = None
    for flag, default in [
        ("--lr_scheduler", "constant"),
        ("--lr_warmup_steps", "0"),
        ("--max_grad_norm", "None"),
        ("--ema_decay", "0.9999"),
        ("--max_train_steps", "None"),
        ("--num_train_epochs", "None"),
        ("--tracker_project_name", "sd_sparse"),
        ("--logging_dir", "logs"),
        ("--discriminator_start_step", "500"),  # the script's own default
        ("--gan", "True"),
    ]:
        assert f"(default: {default})" in " ".join(entries[flag].split()), (flag, entries[flag])
    documented = [flag for flag, entry in entries.items() if flag != "-h"]
    assert len(documented) == len(parser._actions) - 1
    assert all("(default:" in entries[flag] for flag in documented), [
        f for f in documented if "(default:" not in entries[f]
    ]


def test_two_ranks_with_scheduler_ema_and_clipping_stay_bit_identical(tmp_path):
    from launch import launch_two_processes

    out = tmp_path / "ddp"
    done = launch_two_processes(
        ROOT / "tests" / "train_rank_states.py",
        *TINY,
        "--lr_scheduler",
        "linear",
        "--lr_warmup_steps",
        "2",
        "--use_ema",
        "--ema_decay",
        "0.9",
        "--max_grad_norm",
        "0.5",
        "--max_train_steps",
        "4",
        "--checkpointing_steps",
        "100",
        "--validation_steps",
        "100",
        "--output_dir",
        out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    for key, value in rank0["model"].items():
        assert torch.equal(value, rank1["model"][key]), f"model.{key} differs between ranks"
    # the prepared scheduler steps once per process per optimizer step: warmup and decay scaled alike
    state = torch.load(out / "checkpoint-4" / "scheduler.bin", weights_only=False)
    assert state["last_epoch"] == 8 and state["_last_lr"] == pytest.approx([0.0])
    assert states_equal(SparseAutoencoder.from_pretrained(out).state_dict(), rank0["model"])


def test_value_bits_trains_on_quantized_coefficients_and_saves_them(tmp_path):
    """--value_bits reaches the dictionary: the saved model codes with levels on its grid, and the
    decoder was trained on those quantized codes (the coded latents are the dequantized levels' sum)."""
    model, _ = run(
        [*TINY, "--value_bits", "4", "--value_refit", "--max_train_steps", "2", "--validation_steps", "100"]
        + ["--output_dir", str(tmp_path)]
    )
    loaded = SparseAutoencoder.from_pretrained(tmp_path).eval()
    assert (loaded.config.bottleneck_config["value_bits"], loaded.config.bottleneck_config["value_refit"]) == (4, True)
    assert loaded.bottleneck.value_bits == 4 and loaded.bottleneck.config.value_refit
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        out = loaded(images)
    codes = out.codes
    assert codes.levels is not None and int(codes.levels.abs().max()) <= 8
    dequantized = loaded.bottleneck.dequantize_values(codes.indices, codes.levels)
    assert torch.equal(codes.coefficients, dequantized.to(codes.coefficients.dtype))


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--bottleneck_type", "vq", "--value_bits", "4"], "`value_bits` quantizes sparse coefficients"),
        (["--bottleneck_type", "lista", "--value_refit"], "`value_refit` is a dictionary option"),
        (["--value_bits", "1"], r"--value_bits must be in \[2, 16\], got 1\."),  # checked before the model is built
    ],
)
def test_value_bits_flag_errors_name_the_flag(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        run([*TINY, *flags, "--max_train_steps", "1", "--output_dir", str(tmp_path)])
    assert not (tmp_path / "checkpoint-1").exists()
