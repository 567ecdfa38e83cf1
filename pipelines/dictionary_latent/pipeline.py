"""`DictionaryLatentPipeline` as a diffusers custom pipeline.

    DiffusionPipeline.from_pretrained(sd_dir, custom_pipeline="pipelines/dictionary_latent",
                                      bottleneck=bottleneck, trust_remote_code=True)

diffusers asks `trust_remote_code=True` for any local pipeline file. The class itself lives in the
installed `sd_sparse` package (so `from sd_sparse import DictionaryLatentPipeline` needs neither
this file nor that flag). `DiffusionPipeline.from_pretrained` hands extra keyword arguments only to
`__init__`, so the class here adds the one keyword the package class takes in `from_pretrained`
instead: `bottleneck`, which wraps the loaded VAE. It is not a component (nothing is saved for it:
the bottleneck lives in the coded VAE).
"""

from typing import Optional

from sd_sparse.bottlenecks import Bottleneck
from sd_sparse.pipelines import dictionary_latent as _package  # a module, so diffusers finds one pipeline class here

__all__ = ["DictionaryLatentPipeline"]


class DictionaryLatentPipeline(_package.DictionaryLatentPipeline):
    """`sd_sparse.DictionaryLatentPipeline` whose `__init__` also takes `bottleneck` (see the module docstring)."""

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        safety_checker,
        feature_extractor,
        image_encoder=None,
        requires_safety_checker: bool = True,
        bottleneck: Optional[Bottleneck] = None,
    ):
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
            image_encoder=image_encoder,
            requires_safety_checker=requires_safety_checker,
        )
        if bottleneck is not None:
            self.bottleneck = bottleneck
