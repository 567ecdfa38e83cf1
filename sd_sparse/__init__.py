"""sd_sparse: sparse dictionary learning and vector quantization bottlenecks for autoencoder latents.

The top-level names are lazy, as in diffusers' own `__init__`: `import sd_sparse` imports neither
torch nor diffusers, `from sd_sparse import batch_omp` imports torch only, and the pipelines (with
transformers) load when `DictionaryLatentPipeline` is first used. diffusers' loaders know the
`sd_sparse` component library and our pipelines from `import sd_sparse` on, and `from_pipe` carries
coded VAEs over (all of it in `diffusers_patches.py`).
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_dir, lazy_getattr, suffix_fallback
from .codec.vae_identity import register_vae_identity as _register_vae_identity
from .diffusers_patches import teach_diffusers

__version__ = "0.1.0"

_import_structure = {
    "autoencoders": [
        "AutoencoderKLWithBottleneck",
        "AutoencoderTinyWithBottleneck",
        "CodedAutoencoderMixin",
        "TAESDAutoencoder",
        "coded_vae_class",
        "with_bottleneck",
    ],
    "bottlenecks": [
        "Bottleneck",
        "BottleneckOutput",
        "DictionaryBottleneck",
        "EntropyCodedScalarQuantizer",
        "FiniteScalarQuantizer",
        "LISTABottleneck",
        "ResidualVectorQuantizer",
        "ScalarQuantizer",
        "VectorQuantizer",
    ],
    "codec.codes": ["Codes"],
    "models": ["SparseAutoencoder", "SparseAutoencoderOutput"],
    "pipelines": [
        "CodePriorPipeline",
        "CodePriorPipelineOutput",
        "DictionaryLatentPipeline",
        "DictionaryLatentPipelineOutput",
    ],
    "priors": ["CodePrior", "CodePriorOutput"],
    "sparse_coding": ["SparseCodes", "batch_omp"],
}

__all__ = [
    "AutoencoderKLWithBottleneck",
    "AutoencoderTinyWithBottleneck",
    "Bottleneck",
    "BottleneckOutput",
    "CodedAutoencoderMixin",
    "CodePrior",
    "CodePriorOutput",
    "CodePriorPipeline",
    "CodePriorPipelineOutput",
    "Codes",
    "DictionaryBottleneck",
    "DictionaryLatentPipeline",
    "DictionaryLatentPipelineOutput",
    "EntropyCodedScalarQuantizer",
    "FiniteScalarQuantizer",
    "LISTABottleneck",
    "ResidualVectorQuantizer",
    "ScalarQuantizer",
    "SparseAutoencoder",
    "SparseAutoencoderOutput",
    "SparseCodes",
    "TAESDAutoencoder",
    "VectorQuantizer",
    "batch_omp",
    "coded_vae_class",
    "with_bottleneck",
]

if TYPE_CHECKING:
    from .autoencoders import (
        AutoencoderKLWithBottleneck,
        AutoencoderTinyWithBottleneck,
        CodedAutoencoderMixin,
        TAESDAutoencoder,
        coded_vae_class,
        with_bottleneck,
    )
    from .bottlenecks import (
        Bottleneck,
        BottleneckOutput,
        DictionaryBottleneck,
        EntropyCodedScalarQuantizer,
        FiniteScalarQuantizer,
        LISTABottleneck,
        ResidualVectorQuantizer,
        ScalarQuantizer,
        VectorQuantizer,
    )
    from .codec.codes import Codes
    from .models import SparseAutoencoder, SparseAutoencoderOutput
    from .pipelines import (
        CodePriorPipeline,
        CodePriorPipelineOutput,
        DictionaryLatentPipeline,
        DictionaryLatentPipelineOutput,
    )
    from .priors import CodePrior, CodePriorOutput
    from .sparse_coding import SparseCodes, batch_omp

# the lazy exports, and `<DiffusersVAEClass>WithBottleneck` for every coded VAE class (what `model_index.json`
# names and diffusers' loaders look up here)
__getattr__ = lazy_getattr(
    __name__, _import_structure, fallback=suffix_fallback(__name__, "WithBottleneck", "autoencoders")
)
__dir__ = lazy_dir(__name__, _import_structure)


def _vae_identity(vae):
    """`sd_sparse.autoencoders.identity.vae_identity`, imported on first use."""
    from .autoencoders.identity import vae_identity

    return vae_identity(vae)


# The codec records VAEs by `VAEIdentity` and may not import the autoencoders that compute it: this root
# module, which runs before any sd_sparse module, connects the two (`sd_sparse/codec/vae_identity.py`), so
# `Codes.to_bytes(bottleneck, vae=<a diffusers VAE>)` keeps working.
_register_vae_identity(_vae_identity)


# `model_index.json` names our components `["sd_sparse", "<Class>"]`: diffusers resolves them as
# attributes of this module (the lazy `__getattr__` above) once the library is registered.
teach_diffusers(
    library="sd_sparse",
    library_classes={
        name: ["save_pretrained", "from_pretrained"]
        for name in ("Bottleneck", "CodedAutoencoderMixin", "CodePrior", "TAESDAutoencoder")
    },
    pipelines={name: f"{__name__}.pipelines" for name in _import_structure["pipelines"] if name.endswith("Pipeline")},
)
