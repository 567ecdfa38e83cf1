"""Custom diffusers pipelines (registered with diffusers' loaders on import)."""

from .dictionary_latent import DictionaryLatentPipeline, DictionaryLatentPipelineOutput
from .registration import register_with_diffusers

register_with_diffusers(DictionaryLatentPipeline)

__all__ = ["DictionaryLatentPipeline", "DictionaryLatentPipelineOutput", "register_with_diffusers"]
