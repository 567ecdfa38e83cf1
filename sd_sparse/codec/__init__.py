"""Bit-exact codes: `Codes`, coefficient quantization, entropy coding (constriction) and the codes file.

- `codes`: `Codes`, what every bottleneck's `encode` returns and `decode` takes;
- `quantization`: pure tensor code that the bottlenecks use in their forward;
- `entropy_model`: `EntropyModel`, what the container reads from the bottleneck that made the codes;
- `vae_identity`: `VAEIdentity`, the VAE a codes file records;
- `file_format`, `container`, `entropy` (these need the optional `constriction` package to code): `Codes`
  as bytes and back.

The codec imports nothing above it (bottlenecks implement its `EntropyModel`; the autoencoders compute
`VAEIdentity`s). Names load on first use, so `import sd_sparse` (which registers the VAE identity resolver
from `vae_identity`) stays free of torch.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_dir, lazy_getattr

_import_structure = {
    "codes": ["Codes", "codes_from_bytes", "encode_signature"],
    "container": ["codes_to_bytes", "measured_bits_per_position", "read_codes"],
    "entropy_model": ["EntropyModel"],
    "file_format": ["CodesFileInfo", "codes_file_info"],
    "quantization": [
        "LEVEL_DTYPE",
        "check_value_bits",
        "dequantize",
        "level_range",
        "quantization_step",
        "quantize",
        "quantize_with_feedback",
    ],
    # `vae_fingerprint`: deprecated, use sd_sparse.autoencoders.identity.vae_fingerprint
    "vae_identity": ["VAEIdentity", "as_vae_identity", "register_vae_identity", "vae_fingerprint"],
}

__all__ = [
    "Codes",
    "CodesFileInfo",
    "EntropyModel",
    "LEVEL_DTYPE",
    "VAEIdentity",
    "as_vae_identity",
    "check_value_bits",
    "codes_file_info",
    "codes_from_bytes",
    "codes_to_bytes",
    "dequantize",
    "encode_signature",
    "level_range",
    "measured_bits_per_position",
    "quantization_step",
    "quantize",
    "quantize_with_feedback",
    "read_codes",
    "register_vae_identity",
    "vae_fingerprint",
]

if TYPE_CHECKING:
    from .codes import Codes, codes_from_bytes, encode_signature
    from .container import codes_to_bytes, measured_bits_per_position, read_codes
    from .entropy_model import EntropyModel
    from .file_format import CodesFileInfo, codes_file_info
    from .quantization import (
        LEVEL_DTYPE,
        check_value_bits,
        dequantize,
        level_range,
        quantization_step,
        quantize,
        quantize_with_feedback,
    )
    from .vae_identity import VAEIdentity, as_vae_identity, register_vae_identity, vae_fingerprint

__getattr__ = lazy_getattr(__name__, _import_structure)
__dir__ = lazy_dir(__name__, _import_structure)
