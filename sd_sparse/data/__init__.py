"""Images for the demo, the trainer and the fit script: sources, the one transform, held-out splits, the
training data pipeline (`build_training_data` of a `TrainingDataConfig`) and its flags."""

from .arguments import BooleanFlag, add_data_arguments, check_data_arguments
from .config import TrainingDataConfig
from .image_datasets import BatchStream, EpochSampler, ImageDataset, StreamingImageDataset, collate_images
from .image_sources import IMAGE_EXTENSIONS, ImageSource, image_files, load_stream, read_image
from .images import load_images, prepare_image, random_crops, read_images
from .photographs import photo_crops, photo_patches, save_sample_photographs, to_image, to_tensor
from .shipped_photographs import sample_photographs
from .splits import held_out_by_hash, reference_split, split_by_image, split_images
from .training_data import TrainingData, build_training_data
from .transforms import BadImageError, ImageTransform

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "BatchStream",
    "BooleanFlag",
    "EpochSampler",
    "ImageDataset",
    "ImageSource",
    "ImageTransform",
    "StreamingImageDataset",
    "TrainingData",
    "TrainingDataConfig",
    "add_data_arguments",
    "build_training_data",
    "check_data_arguments",
    "collate_images",
    "held_out_by_hash",
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
