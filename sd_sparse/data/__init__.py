"""Images for the demo, the trainer and the fit script: image sources, transforms, the shipped photographs."""

from .images import (
    IMAGE_EXTENSIONS,
    image_files,
    load_images,
    load_training_images,
    prepare_image,
    random_crops,
    read_image,
    read_images,
    split_images,
)
from .photographs import photo_patches, sample_photographs, split_by_image, to_image, to_tensor

__all__ = [
    "IMAGE_EXTENSIONS",
    "image_files",
    "load_images",
    "load_training_images",
    "photo_patches",
    "prepare_image",
    "random_crops",
    "read_image",
    "read_images",
    "sample_photographs",
    "split_by_image",
    "split_images",
    "to_image",
    "to_tensor",
]
