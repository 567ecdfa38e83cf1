"""Custom diffusers pipelines. Saved ones load with `DiffusionPipeline.from_pretrained` after `import
sd_sparse` (which registers the `sd_sparse` component library and these pipeline names with diffusers'
loaders, see `sd_sparse/diffusers_patches.py`)."""

from .code_prior import CodePriorPipeline, CodePriorPipelineOutput
from .dictionary_latent import DictionaryLatentPipeline, DictionaryLatentPipelineOutput

__all__ = ["CodePriorPipeline", "CodePriorPipelineOutput", "DictionaryLatentPipeline", "DictionaryLatentPipelineOutput"]
