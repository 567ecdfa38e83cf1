"""Images for the demo, the trainer and the fit script: sources, the one transform, the training data pipeline."""

from .image_datasets import BatchStream, EpochSampler, ImageDataset, StreamingImageDataset, collate_images
from .image_sources import IMAGE_EXTENSIONS, ImageSource, image_files, load_stream, read_image
from .images import load_images, prepare_image, random_crops, read_images, split_images
from .photographs import (
    photo_crops,
    photo_patches,
    reference_split,
    sample_photographs,
    save_sample_photographs,
    split_by_image,
    to_image,
    to_tensor,
)
from .training_data import TrainingData, add_data_arguments, build_training_data, check_data_arguments
from .transforms import BadImageError, ImageTransform

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "BatchStream",
    "EpochSampler",
    "ImageDataset",
    "ImageSource",
    "ImageTransform",
    "StreamingImageDataset",
    "TrainingData",
    "add_data_arguments",
    "build_training_data",
    "check_data_arguments",
    "collate_images",
    "image_files",
    "load_images",
    "load_stream",
    "photo_crops",
    "photo_patches",
    "prepare_image",
    "random_crops",
    "read_image",
    "read_images",
    "reference_split",
    "sample_photographs",
    "save_sample_photographs",
    "split_by_image",
    "split_images",
    "to_image",
    "to_tensor",
]
