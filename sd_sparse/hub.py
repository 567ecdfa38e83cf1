"""Sharing fitted bottlenecks (and the priors and autoencoders trained here) on the Hugging Face Hub: model cards,
push and pull."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Dict

from .errors import UserError

METRIC_NAMES = {
    "latent_psnr": "latent PSNR (dB)",
    "image_psnr": "image PSNR vs plain VAE (dB)",
    "flip": "FLIP vs plain VAE",
    "perplexity": "usage perplexity",
    "dead_codes": "dead codes",
    "bits_per_position": "bits per latent position",
    "measured_bits_per_position": "measured bits per position (codes file)",
}


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return (
        f"{value:.4f}"
        if isinstance(value, float) and abs(value) < 1
        else (f"{value:.2f}" if isinstance(value, float) else str(value))
    )


def metrics_table(metrics: Dict[str, Dict]) -> str:
    """Markdown table, one row per bottleneck name, from `evaluate_bottleneck` results."""
    columns = [k for k in METRIC_NAMES if any(k in m for m in metrics.values())]
    lines = ["| bottleneck | " + " | ".join(METRIC_NAMES[c] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in metrics.items():
        cells = [_fmt(values.get(c)) for c in columns]
        if "perplexity" in columns and values.get("num_codes"):
            cells[columns.index("perplexity")] += f" / {values['num_codes']}"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _json_section(title: str, data: Dict) -> list:
    return [f"## {title}", "", "```json", json.dumps(data, indent=2, default=str), "```"]


def _storage_and_config(bits: float | None, config: Dict) -> list:
    storage = f"Storage: {bits:g} bits per latent position." if bits is not None else "Storage: variable-length codes."
    return [storage, "", *_json_section("Configuration", config)]


def bottleneck_model_card(bottleneck, base_model: str | None = None, metrics: Dict | None = None) -> str:
    """A Hub model card (README.md) for a fitted bottleneck: config, base VAE, metrics, storage, usage."""
    from .metrics import bits_per_position

    cls = type(bottleneck).__name__
    config = {k: v for k, v in bottleneck.config.items() if not k.startswith("_")}
    front = ["---", "library_name: sd_sparse", "tags:", "- sd_sparse", "- sparse-coding", f"- {cls}"]
    if base_model and not os.path.isdir(base_model):
        front.append(f"base_model: {base_model}")
    front.append("---")
    bits = bits_per_position(bottleneck)
    body = [
        f"# {cls}",
        "",
        f"A latent bottleneck from [sd_sparse](https://pypi.org/project/sd_sparse/) for the VAE of "
        f"`{base_model or 'an unspecified autoencoder'}`. It codes diffusion-space latents (scaled by the VAE's "
        "scaling factor) and drops into `DictionaryLatentPipeline`:",
        "",
        "```python",
        f"from sd_sparse import {cls}, DictionaryLatentPipeline",
        f'bottleneck = {cls}.from_pretrained("REPO_ID")',
        f'pipe = DictionaryLatentPipeline.from_pretrained("{base_model or "SD_MODEL"}", bottleneck=bottleneck)',
        "```",
        "",
        *_storage_and_config(bits, config),
    ]
    if metrics:
        body += ["", "## Held-out metrics", "", metrics_table({cls: metrics})]
    return "\n".join(front + body) + "\n"


def prior_model_card(prior, base_model: str | None = None, results: str | None = None) -> str:
    """A Hub model card (README.md) for a trained `CodePrior`: the bottleneck it models, base VAE, usage, config
    and the held-out results (`results`, a markdown table)."""
    config = {k: v for k, v in prior.config.items() if not k.startswith("_")}
    front = ["---", "library_name: sd_sparse", "tags:", "- sd_sparse", "- code-prior", "- entropy-coding"]
    if base_model and not os.path.isdir(base_model):
        front.append(f"base_model: {base_model}")
    front.append("---")
    bottleneck = f"{config.get('bottleneck_class')} (config {config.get('bottleneck_fingerprint')})"
    body = [
        "# CodePrior",
        "",
        f"A learned prior from [sd_sparse](https://pypi.org/project/sd_sparse/) over the codes of a {bottleneck} "
        f"on the latents of `{base_model or 'an unspecified VAE'}`: it entropy-codes codes files and samples codes.",
        "",
        "```python",
        "from sd_sparse import CodePrior",
        'prior = CodePrior.from_pretrained("REPO_ID")',
        "prior.check_bottleneck(bottleneck)  # the bottleneck it was trained on",
        "data = bottleneck.encode(latents).to_bytes(bottleneck, prior=prior)",
        "codes = prior.sample(bottleneck, height, width, num_images=4)",
        "```",
        "",
        *_json_section("Configuration", config),
    ]
    if results:
        body += ["", "## Held-out bits per latent position", "", results]
    return "\n".join(front + body) + "\n"


def create_hub_repo(repo_id: str, token: str | None = None, private: bool | None = None) -> str:
    """Checks that there is a token and creates `repo_id` (if needed) before any long work; returns the
    repo id the Hub answered with. `ValueError` without a token; the Hub's errors (a refused token, an
    unreachable endpoint) propagate."""
    from huggingface_hub import create_repo, get_token

    if not (token or get_token()):
        raise UserError(
            f"pushing to {repo_id} needs a Hugging Face token: pass --hub_token, set HF_TOKEN or run `hf auth login`."
        )
    return create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id


def push_bottleneck(
    bottleneck,
    repo_id: str,
    base_model: str | None = None,
    metrics: Dict | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    safe_serialization: bool = True,
    variant: str | None = None,
    subfolder: str | None = None,
) -> str:
    """Creates `repo_id` if needed and uploads the weights, config, model card and metrics; returns the commit URL.

    `create_pr`, `safe_serialization`, `variant` and `subfolder` mean what they mean to diffusers'
    `ModelMixin.push_to_hub`: open a pull request instead of committing to `main`, the weights' format and
    variant, and a folder of the repo to upload into (then, as diffusers does, no model card is written:
    the repo's card belongs to what the root holds)."""
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as folder:
        bottleneck.save_pretrained(folder, safe_serialization=safe_serialization, variant=variant)
        if not subfolder:
            with open(os.path.join(folder, "README.md"), "w") as f:
                f.write(bottleneck_model_card(bottleneck, base_model, metrics).replace("REPO_ID", repo_id))
        if metrics:
            with open(os.path.join(folder, "metrics.json"), "w") as f:
                json.dump({"base_model": base_model, **metrics}, f, indent=2)
        info = upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            token=token,
            commit_message=commit_message or f"Upload {type(bottleneck).__name__}",
            create_pr=create_pr,
            path_in_repo=subfolder,
        )
    return getattr(info, "commit_url", str(info))


#: the family name of a `SparseAutoencoder` by its bottleneck class (others: "<Class>-VAE")
AUTOENCODER_FAMILIES = {"DictionaryBottleneck": "DL-VAE", "VectorQuantizer": "VQ-VAE", "LISTABottleneck": "SC-VAE"}


def autoencoder_model_card(model, metrics: Dict | None = None, training: Dict | None = None) -> str:
    """A Hub model card (README.md) for a trained `SparseAutoencoder` (family, config, metrics, usage),
    or for an `AutoencoderKL` trained by `train/train_vae.py` (passed wrapped, with a `vae` attribute)."""
    from .metrics import bits_per_position

    if hasattr(model, "vae"):
        return _vae_model_card(model.vae, metrics, training)

    config = {k: v for k, v in model.config.items() if not k.startswith("_")}
    bottleneck = config["bottleneck_class"]
    family = AUTOENCODER_FAMILIES.get(bottleneck, f"{bottleneck}-VAE")
    if training and training.get("gan"):
        family = family.replace("VAE", "GAN")
    bits = bits_per_position(model.bottleneck)
    front = ["---", "library_name: sd_sparse", "tags:", "- sd_sparse", "- autoencoder", f"- {family}", "---"]
    body = [
        f"# {family}",
        "",
        f"A `SparseAutoencoder` ({config['architecture']} encoder/decoder, {bottleneck}) "
        "trained with [sd_sparse](https://pypi.org/project/sd_sparse/):",
        "",
        "```python",
        "from sd_sparse import SparseAutoencoder",
        'model = SparseAutoencoder.from_pretrained("REPO_ID")',
        "reconstruction = model(images).sample  # images [B, 3, H, W] in [-1, 1]",
        "```",
        "",
        *_storage_and_config(bits, config),
    ]
    return "\n".join(front + body + _training_and_metrics(training, metrics)) + "\n"


#: the trainer's flags that a trained autoencoder's model card lists under "Training", in this order
TRAINING_CARD_FLAGS = (
    "model_type",
    "gan",
    "eta",
    "learning_rate",
    "lr_scheduler",
    "lr_warmup_steps",
    "train_batch_size",
    "max_train_steps",
    "resolution",
    "seed",
)


def autoencoder_training_summary(
    args, world_size: int, held_out: bool, perceptual: bool, num_skipped: int | None = None
) -> Dict:
    """The "Training" section of a trained autoencoder's card: the trainer's flags (`args`, its namespace:
    `TRAINING_CARD_FLAGS`, the task, the EMA decay with `--use_ema`) and facts of the run (processes,
    whether validation used held-out images, images left out by `--skip_bad_images`, LPIPS on or off)."""
    training = {name: getattr(args, name) for name in TRAINING_CARD_FLAGS}
    training["task"] = args.task
    if args.task == "super_resolution":
        training["sr_factor"] = args.sr_factor
    if args.use_ema:
        training["ema_decay"] = args.ema_decay
    training["world_size"] = world_size
    training["validation"] = "held-out images" if held_out else "training images"
    if args.skip_bad_images:
        training["skipped_bad_images"] = num_skipped
    training["perceptual"] = "LPIPS (VGG16)" if perceptual else "off"
    return training


def write_autoencoder_model_card(
    output_dir: str, model, metrics: Dict | None = None, training: Dict | None = None
) -> str:
    """Writes `autoencoder_model_card(model, metrics, training)` to `<output_dir>/README.md` (its REPO_ID is
    filled in by `push_training_run`); returns the file's path."""
    path = os.path.join(output_dir, "README.md")
    with open(path, "w") as f:
        f.write(autoencoder_model_card(model, metrics, training))
    return path


def _training_and_metrics(training: Dict | None, metrics: Dict | None) -> list:
    """The model card's training settings and last validation metrics (either may be absent)."""
    lines = []
    if training:
        lines += ["", *_json_section("Training", training)]
    if metrics:
        lines += ["", "## Validation metrics (last step)", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    return lines


def _vae_model_card(vae, metrics: Dict | None, training: Dict | None) -> str:
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    factor = 2 ** (len(config["block_out_channels"]) - 1)
    front = ["---", "library_name: diffusers", "tags:", "- sd_sparse", "- autoencoder", "- AutoencoderKL", "---"]
    body = [
        "# AutoencoderKL",
        "",
        f"A diffusers `AutoencoderKL` ({config['latent_channels']} latent channels, downsampling {factor}) trained "
        "with [sd_sparse](https://pypi.org/project/sd_sparse/)'s `train/train_vae.py` (reconstruction, LPIPS "
        "when local weights exist, KL; optional PatchGAN):",
        "",
        "```python",
        "from diffusers import AutoencoderKL",
        'vae = AutoencoderKL.from_pretrained("REPO_ID")',
        "reconstruction = vae(images).sample  # images [B, 3, H, W] in [-1, 1]",
        "```",
        "",
        *_json_section("Configuration", config),
    ]
    return "\n".join(front + body + _training_and_metrics(training, metrics)) + "\n"


def push_training_run(
    output_dir: str,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
) -> str:
    """Uploads a finished training folder (model, discriminator, model card, validation PNGs) without its
    checkpoints; returns the commit URL."""
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id
    readme = os.path.join(output_dir, "README.md")
    if os.path.isfile(readme):
        with open(readme) as f:
            text = f.read()
        with open(readme, "w") as f:
            f.write(text.replace("REPO_ID", repo_id))
    info = upload_folder(
        repo_id=repo_id,
        folder_path=output_dir,
        token=token,
        commit_message=commit_message or "Upload trained SparseAutoencoder",
        ignore_patterns=["checkpoint-*", "checkpoint-*/**", "*.tmp", "*.tmp/**", "logs/**"],
    )
    return getattr(info, "commit_url", str(info))
