"""`CodePriorPipeline` as a diffusers custom pipeline.

    DiffusionPipeline.from_pretrained(folder, custom_pipeline="pipelines/code_prior", trust_remote_code=True)

`folder` holds a `vae` (a coded VAE) and a `prior` (`CodePrior`) component. diffusers asks
`trust_remote_code=True` for any local pipeline file. The class lives in the installed `sd_sparse` package,
so `from sd_sparse import CodePriorPipeline` (or `DiffusionPipeline.from_pretrained(folder)` after
`import sd_sparse`) needs neither this file nor that flag; it takes no extra loading arguments, so this
file only names it.
"""

from sd_sparse.pipelines.code_prior import CodePriorPipeline

__all__ = ["CodePriorPipeline"]
