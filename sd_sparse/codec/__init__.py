"""Bit-exact codes: coefficient quantization, entropy coding (constriction) and the codes file format.

`quantization` is pure tensor code that the bottlenecks use in their forward; `entropy` and `container`
(which need the optional `constriction` package) turn `Codes` into bytes and back.
"""

from .quantization import (
    LEVEL_DTYPE,
    check_value_bits,
    dequantize,
    level_range,
    quantization_step,
    quantize,
    quantize_with_feedback,
)

_CONTAINER_NAMES = (
    "CodesFileInfo",
    "codes_file_info",
    "codes_from_bytes",
    "codes_to_bytes",
    "measured_bits_per_position",
    "vae_fingerprint",
)

__all__ = [
    "LEVEL_DTYPE",
    "check_value_bits",
    "dequantize",
    "level_range",
    "quantization_step",
    "quantize",
    "quantize_with_feedback",
    *_CONTAINER_NAMES,
]


def __getattr__(name: str):
    # the container imports the bottlenecks' `Codes`, which import this package: load it on first use
    if name in _CONTAINER_NAMES:
        from . import container

        return getattr(container, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
