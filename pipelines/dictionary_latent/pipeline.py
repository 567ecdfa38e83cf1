"""`DictionaryLatentPipeline` as a diffusers custom pipeline.

    DiffusionPipeline.from_pretrained(sd_dir, custom_pipeline="pipelines/dictionary_latent",
                                      bottleneck=bottleneck, trust_remote_code=True)

diffusers asks `trust_remote_code=True` for any local pipeline file. The class itself lives in the
installed `sd_sparse` package (so `from sd_sparse import DictionaryLatentPipeline` needs neither
this file nor that flag); this file only points diffusers at it.
"""

from sd_sparse.pipelines.dictionary_latent import DictionaryLatentPipeline

__all__ = ["DictionaryLatentPipeline"]
