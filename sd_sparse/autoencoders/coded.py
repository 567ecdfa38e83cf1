"""What the coded VAEs share: the `bottleneck` submodule, coding in diffusion space, `code()`, dtype rules.

`CodedAutoencoderMixin` goes before a diffusers VAE class; `coded_classes.coded_vae_class` makes the
subclass for any of them, adding `__init__` and `decode(..., apply_bottleneck=True)` with that class's
signatures. Video latents `[B, C, T, h, w]` are coded frame by frame.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook

from ..bottleneck_classes import bottleneck_class
from ..bottlenecks import Bottleneck, BottleneckOutput
from ..configuration import SavedClassCheckMixin
from ..errors import UserError
from .frames import fold_frames, unfold_frames, with_frames
from .image_range import check_image_range
from .scaling import decode_kwargs_for, encode_latents, to_diffusion_space, to_vae_space, vae_latents
from .shared_weights import device_of as _device_of
from .shared_weights import keep_floating_dtype as _keep_floating_dtype
from .shared_weights import with_shared_weights as _with_shared_weights

_BOTTLENECK_CONFIG_ARGS = ("bottleneck_class", "bottleneck_config")


@dataclass
class CodedAutoencoderOutput(BaseOutput):
    """Output of a coded VAE's `code` method.

    Args:
        images (`torch.Tensor` `[B, 3, H, W]`, *optional*): decoded from the coded latents, in [-1, 1]
            (clamped); None with `return_images=False`. Videos `[B, 3, T, H, W]` for video VAEs.
        latents (`torch.Tensor` `[B, C, h, w]`): the coded diffusion-space latents (`[B, C, T, h, w]` for videos).
        reference_latents (`torch.Tensor` `[B, C, h, w]`): the diffusion-space latents before the bottleneck.
        codes (`Codes`): the bottleneck's codes of the batch.
        latent_psnr (`torch.Tensor` `[B]`): PSNR of coded vs reference latents (peak = each reference's range).
        bits_per_position (`float` or None): storage per latent position of the codes.
        reference_images (`torch.Tensor` `[B, 3, H, W]`, *optional*): the decode without the bottleneck,
            with `return_reference=True`.
        bottleneck_output (`BottleneckOutput`): everything the bottleneck returned.
    """

    images: Optional[torch.Tensor]
    latents: torch.Tensor
    reference_latents: torch.Tensor
    codes: Any
    latent_psnr: torch.Tensor
    bits_per_position: Optional[float]
    reference_images: Optional[torch.Tensor] = None
    bottleneck_output: Optional[BottleneckOutput] = None


def public_config(module) -> Dict[str, Any]:
    """A module's config without diffusers' private keys (`_class_name`, `_diffusers_version`, ...)."""
    return {k: v for k, v in module.config.items() if not k.startswith("_")}


def check_channels(bottleneck_channels: int, vae_channels: int) -> None:
    if bottleneck_channels != vae_channels:
        raise UserError(
            f"the bottleneck codes {bottleneck_channels}-channel latents (`bottleneck.config.latent_channels`) but the "
            f"VAE makes {vae_channels}-channel ones (its config's `latent_channels` or `z_dim`): build the "
            f"bottleneck with latent_channels={vae_channels}."
        )


class CodedAutoencoderMixin(SavedClassCheckMixin):
    """Shared by every coded VAE class (`AutoencoderKLWithBottleneck`, `AutoencoderKLFlux2WithBottleneck`, ...).

    The bottleneck is a submodule named `bottleneck`: it is saved with the VAE's weights (one
    safetensors file), its class and config are in the VAE's config, and it stays in its own dtype
    (float32) when the VAE is cast (`to`, `half`, layerwise casting, `torch_dtype` at loading).
    """

    _keep_in_fp32_modules = ["bottleneck"]
    _skip_layerwise_casting_patterns = ["bottleneck"]
    #: the diffusers VAE class this coded VAE extends (set by `coded_vae_class`)
    _vae_class: type = None

    def coded_forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: Optional[torch.Generator] = None,
        decode_kwargs: Optional[Dict[str, Any]] = None,
    ):
        """Images `[B, 3, H, W]` (videos `[B, 3, T, H, W]`) → the coded reconstruction, with the bottleneck's
        loss in `commit_loss` (as `VQModel`); `(sample, commit_loss)` with `return_dict=False`. Uses the
        posterior's mode unless `sample_posterior=True` (VAEs without a posterior: their latents);
        `decode_kwargs` go to `decode`. Every coded class's `forward` (its VAE class's signature) calls this."""
        from diffusers.models.autoencoders.vae import DecoderOutput

        z = vae_latents(self.encode(sample), sample=sample_posterior, generator=generator)
        coded, out = self.code_vae_latents(z)
        kwargs = {**decode_kwargs_for(self, coded), **(decode_kwargs or {})}
        decoded = self.decode(coded, apply_bottleneck=False, **kwargs)
        dec = decoded.sample if hasattr(decoded, "sample") else decoded
        if not return_dict:
            return dec, out.loss
        return DecoderOutput(sample=dec, commit_loss=out.loss)

    # -- construction ------------------------------------------------------------------------------
    def _build_bottleneck(self, bottleneck_class_name: str, bottleneck_config: Optional[dict], latent_channels: int):
        config = dict(bottleneck_config or {})
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        config.setdefault("latent_channels", latent_channels)
        check_channels(config["latent_channels"], latent_channels)
        cls = bottleneck_class(bottleneck_class_name)
        self.bottleneck = cls.from_config(config).float()

    @classmethod
    def _other_class_hint(cls, saved: str) -> str:
        return (
            f"load the VAE with {saved}.from_pretrained and add a bottleneck with "
            f"`{cls.__name__}.from_vae(vae, bottleneck)` or `sd_sparse.with_bottleneck`."
        )

    @classmethod
    def _vae_init_names(cls) -> Tuple[str, ...]:
        names = inspect.signature(cls.__init__).parameters
        return tuple(n for n in names if n != "self" and n not in _BOTTLENECK_CONFIG_ARGS)

    @classmethod
    def from_vae(cls, vae, bottleneck: Bottleneck):
        """A coded VAE holding `vae`'s weights (shared, not copied: no extra memory) and `bottleneck`.

        Args:
            vae: a diffusers VAE of this class's base class (or a coded one, whose bottleneck is replaced).
            bottleneck (`Bottleneck`): fitted on this VAE's diffusion-space latents; moved to the VAE's
                device in its own float dtype (float32 for a half-precision one).

        The result is on the VAE's device, in its dtype and training mode (which the bottleneck takes
        too), with its slicing and tiling settings. Offloading hooks are not carried over.
        """
        if type(vae) not in (cls, cls._vae_class):
            raise UserError(
                f"`vae` must be a diffusers {cls._vae_class.__name__} for {cls.__name__}, got {type(vae).__name__}."
            )
        if not isinstance(bottleneck, Bottleneck):
            raise UserError(f"`bottleneck` must be an sd_sparse Bottleneck, got {type(bottleneck).__name__}.")
        from .families import latent_channels

        check_channels(bottleneck.config.latent_channels, latent_channels(vae))
        config = {k: vae.config[k] for k in cls._vae_init_names() if k in vae.config}
        config.update(bottleneck_class=type(bottleneck).__name__, bottleneck_config=public_config(bottleneck))
        model = _with_shared_weights(cls, config, vae, skip_prefix="bottleneck.")
        if bottleneck.dtype in (torch.float16, torch.bfloat16):
            bottleneck = bottleneck.float()
        model.bottleneck = bottleneck.to(device=vae.device)
        model.train(vae.training)
        return model

    def without_bottleneck(self):
        """The plain diffusers VAE (sharing these weights): what this coded VAE decodes with."""
        config = {k: self.config[k] for k in self._vae_init_names() if k in self.config}
        model = _with_shared_weights(self._vae_class, config, self, skip_prefix="bottleneck.")
        model.train(self.training)
        return model

    # -- dtype: the bottleneck keeps its own --------------------------------------------------------
    def _apply(self, fn, recurse: bool = True):
        bottleneck = self._modules.get("bottleneck")
        if not recurse or bottleneck is None:
            return super()._apply(fn, recurse)
        self._modules["bottleneck"] = None  # keeps its place; children() skips it
        try:
            super()._apply(fn, recurse)
        finally:
            self._modules["bottleneck"] = bottleneck
        bottleneck._apply(_keep_floating_dtype(fn))
        return self

    # -- coding -----------------------------------------------------------------------------------
    @property
    def bits_per_position(self) -> Optional[float]:
        """Storage per latent position of the bottleneck's codes."""
        from ..metrics import bits_per_position

        return bits_per_position(self.bottleneck)

    @property
    def _video(self) -> bool:
        from .families import family_of

        return family_of(self).kind == "video"

    def _check_latents(self, name: str, latents) -> None:
        from .families import latent_channels

        channels = latent_channels(self)
        dims, shape = ((4, 5), f"[B, {channels}, T, h, w]") if self._video else ((4,), f"[B, {channels}, h, w]")
        if not isinstance(latents, torch.Tensor) or latents.dim() not in dims or latents.shape[1] != channels:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise UserError(f"`{name}` must be a tensor {shape} of {type(self).__name__} latents, got {got}.")

    def _run_bottleneck(self, latents: torch.Tensor) -> Tuple[torch.Tensor, BottleneckOutput]:
        """Diffusion-space latents → (coded latents, in float32 or wider, the bottleneck's output).

        Video latents `[B, C, T, h, w]` are coded frame by frame (their codes say T, `Codes.frames`).
        Latents whose height or width is not a multiple of the bottleneck's patch size are padded
        (edge values repeated) for coding and cropped back, so every size a pipeline allows codes;
        the codes then describe the padded latents.
        """
        compute = torch.promote_types(latents.dtype, torch.float32)
        frames = latents.shape[2] if latents.dim() == 5 else None
        x = fold_frames(latents.to(compute))
        h, w = x.shape[-2:]
        ph, pw = self.bottleneck.patch_size
        padding = (0, (-w) % pw, 0, (-h) % ph)
        if any(padding):
            x = torch.nn.functional.pad(x, padding, mode="replicate")
        out = self.bottleneck(x)
        if frames is not None:
            out.codes = with_frames(out.codes, frames)
        coded = out.latents[..., :h, :w].to(compute)
        return unfold_frames(coded, frames), out

    def code_vae_latents(self, z: torch.Tensor) -> Tuple[torch.Tensor, BottleneckOutput]:
        """The VAE's own latents `z` `[B, C, h, w]` (`[B, C, T, h, w]` for videos) → (coded latents in the
        same space and dtype, the bottleneck's output). Coding happens in float32 on diffusion-space latents `(z − shift)·scale`."""
        self._check_latents("z", z)
        coded, out = self._run_bottleneck(to_diffusion_space(self, z.to(torch.promote_types(z.dtype, torch.float32))))
        return to_vae_space(self, coded).to(z.dtype), out

    @torch.no_grad()
    def compress(
        self,
        images: torch.Tensor,
        sample_posterior: bool = False,
        generator: Optional[torch.Generator] = None,
        batch_size: Optional[int] = None,
        progress: bool = False,
    ):
        """Images `[B, 3, H, W]` (videos `[B, 3, T, H, W]` for a video VAE) in [-1, 1] → the bottleneck's
        `Codes` of their diffusion-space latents (the posterior's mode unless `sample_posterior=True`;
        video latents frame by frame, the codes recording T). The latents' height and width must be
        multiples of the bottleneck's patch size. `decompress` turns the codes back into images.

        `batch_size` images go through the VAE's encoder at a time (None: all at once), with a tqdm bar
        over the images when `progress`. Images outside [-1, 1] (by more than 1e-3: e.g. [0, 255]) are a
        `ValueError`; images all in [0, 1] get a warning. The bottleneck runs in eval mode (no state changes)."""
        check_image_range(images)
        if batch_size is not None and batch_size < 1:
            raise UserError(f"`batch_size` must be >= 1 or None, got {batch_size}.")
        step = batch_size or max(1, len(images))
        from tqdm.auto import tqdm

        with tqdm(total=len(images), desc="encoding", unit="image", disable=not progress) as bar:
            chunks = []
            for start in range(0, len(images), step):
                chunk = images[start : start + step]
                chunks.append(encode_latents(self, chunk, sample=sample_posterior, generator=generator))
                bar.update(len(chunk))
        latents = torch.cat(chunks)
        frames = latents.shape[2] if latents.dim() == 5 else None
        latents = fold_frames(latents)
        ph, pw = self.bottleneck.patch_size
        if latents.shape[-2] % ph or latents.shape[-1] % pw:
            factor = images.shape[-1] // latents.shape[-1]
            raise UserError(
                f"`images` height and width {tuple(images.shape[-2:])} must be multiples of {factor * ph}x{factor * pw} "
                f"(the VAE's downsampling {factor} × the bottleneck's patch size {ph}x{pw})."
            )
        was_training = self.bottleneck.training
        self.bottleneck.eval()
        try:
            codes = self.bottleneck.encode(latents.to(_device_of(self.bottleneck, latents.device)))
            return with_frames(codes, frames)
        finally:
            self.bottleneck.train(was_training)

    @torch.no_grad()
    def decompress(self, codes) -> torch.Tensor:
        """`Codes` from `compress` (or a file, `Codes.load`), or the bytes of a codes file
        (`codes.to_bytes(vae.bottleneck, vae=vae)`) → images `[B, 3, H, W]` in [-1, 1] (clamped): bit for
        bit what `decode` makes of the same images' latents (videos `[B, 3, T, H, W]` from video codes).
        Codes of another bottleneck, and codes files of another VAE, are a `ValueError` naming both."""
        from .scaling import decode_latents

        if isinstance(codes, (bytes, bytearray, memoryview)):
            from ..codec.codes import Codes

            codes = Codes.from_bytes(codes, self.bottleneck, vae=self)
        if codes.num_frames is not None and not self._video:
            raise UserError(
                f"`codes` are video codes ({codes.num_frames} frames each), but a {type(self).__name__} decodes images."
            )
        latents = unfold_frames(self.bottleneck.decode(codes), codes.num_frames)
        return decode_latents(self, latents, apply_bottleneck=False).clamp(-1, 1)

    @apply_forward_hook
    @torch.no_grad()
    def code(
        self,
        images: Optional[torch.Tensor] = None,
        latents: Optional[torch.Tensor] = None,
        return_images: bool = True,
        return_reference: bool = False,
        sample_posterior: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> CodedAutoencoderOutput:
        """Codes images or diffusion-space latents and reports what the bottleneck did.

        Args:
            images (`torch.Tensor` `[B, 3, H, W]` in [-1, 1], *optional*): encoded first (the posterior's
                mode unless `sample_posterior=True`).
            latents (`torch.Tensor` `[B, C, h, w]`, *optional*): diffusion-space latents, e.g. what a
                pipeline returns with `output_type="latent"`. Pass exactly one of `images`, `latents`.
            return_images (`bool`, defaults to `True`): decode the coded latents (`output.images`).
            return_reference (`bool`, defaults to `False`): also decode the latents without the
                bottleneck (`output.reference_images`).
            sample_posterior (`bool`, defaults to `False`), generator: as in `forward`.

        The bottleneck runs in eval mode here (no state changes), without gradients.
        Returns a `CodedAutoencoderOutput`.
        """
        from ..metrics import latent_psnr
        from .scaling import decode_latents

        if (images is None) == (latents is None):
            raise UserError("pass exactly one of `images` [B, 3, (T,) H, W] and `latents` [B, C, (T,) h, w].")
        if images is not None:
            reference = encode_latents(self, images, sample=sample_posterior, generator=generator)
        else:
            self._check_latents("latents", latents)
            reference = latents
        was_training = self.bottleneck.training
        self.bottleneck.eval()
        try:
            coded, out = self._run_bottleneck(reference.to(_device_of(self.bottleneck, reference.device)))
        finally:
            self.bottleneck.train(was_training)
        coded = coded.to(device=reference.device, dtype=reference.dtype)

        def decode(x):
            return decode_latents(self, x, apply_bottleneck=False).clamp(-1, 1)

        return CodedAutoencoderOutput(
            images=decode(coded) if return_images else None,
            latents=coded,
            reference_latents=reference,
            codes=out.codes,
            latent_psnr=latent_psnr(reference, coded),
            bits_per_position=self.bits_per_position,
            reference_images=decode(reference) if return_reference else None,
            bottleneck_output=out,
        )
