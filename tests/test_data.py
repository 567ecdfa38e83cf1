"""sd_sparse.data: the shipped photographs, image sources and their checks, transforms."""

import numpy as np
import pytest
import torch
from PIL import Image

from sd_sparse.data import (
    ImageSource,
    image_files,
    load_images,
    photo_patches,
    prepare_image,
    random_crops,
    read_images,
    sample_photographs,
    split_by_image,
    split_images,
    to_image,
    to_tensor,
)


def test_sample_photographs_are_real_colour_images():
    photos = sample_photographs()
    assert {"astronaut", "china", "flower", "coffee"} <= set(photos)
    for name, image in photos.items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        assert image.shape[0] >= 256 and image.shape[1] >= 256, name
        assert image.std() > 20, name  # not blank


def test_photo_patches_are_the_image_crops():
    image = sample_photographs()["coffee"]
    patches = photo_patches([image], patch_size=8)
    h, w = image.shape[0] // 8, image.shape[1] // 8
    assert patches.shape == (h * w, 3, 8, 8)
    assert patches.min() >= -1 and patches.max() <= 1
    # patch (row 3, column 5) is that crop of the image
    torch.testing.assert_close(patches[3 * w + 5], to_tensor(image[24:32, 40:48]))
    assert np.array_equal(to_image(to_tensor(image)), image)
    subset = photo_patches([image], patch_size=8, max_patches=100, seed=1)
    assert subset.shape == (100, 3, 8, 8)
    with pytest.raises(ValueError, match="empty"):
        photo_patches([])
    with pytest.raises(ValueError, match="smaller than `patch_size`"):
        photo_patches([np.zeros((4, 4, 3), np.uint8)])


def test_split_is_by_image():
    photos = sample_photographs()
    train, test = split_by_image(photos, ["astronaut"])
    assert set(test) == {"astronaut"} and "astronaut" not in train
    assert set(train) | set(test) == set(photos)
    with pytest.raises(ValueError, match="unknown test images"):
        split_by_image(photos, ["nope"])
    train_ids, held_ids = split_images(10, 0.2, seed=3)
    assert len(held_ids) == 2 and sorted(train_ids + held_ids) == list(range(10))
    assert split_images(10, 0.2, seed=3) == (train_ids, held_ids)
    with pytest.raises(ValueError, match="at least 2 images"):
        split_images(1, 0.5)


def test_every_split_lives_in_splits_and_the_old_paths_still_work():
    from sd_sparse.data import images, photographs, splits, training_data

    old_paths = [
        (images, "split_images", splits.split_images),
        (photographs, "split_by_image", splits.split_by_image),
        (photographs, "reference_split", splits.reference_split),
        (photographs, "REFERENCE_VALIDATION_SPLIT", 0.2),
        (photographs, "REFERENCE_SPLIT_SEED", 0),
        (training_data, "_held_out_by_hash", splits.held_out_by_hash),
    ]
    for module, name, value in old_paths:
        with pytest.warns(FutureWarning, match=f"{module.__name__}.{name} is deprecated: use sd_sparse.data.splits"):
            assert getattr(module, name) == value
    assert not hasattr(images, "nothing_here")  # other names: AttributeError, no warning
    assert split_images is splits.split_images and split_by_image is splits.split_by_image


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "images" / "nested"
    path.mkdir(parents=True)
    gradient = np.linspace(0, 255, 40 * 30 * 3).reshape(30, 40, 3).astype(np.uint8)
    Image.fromarray(gradient).save(path / "b.png")
    Image.fromarray(gradient[:, ::-1]).save(path / "a.jpg", quality=95)
    (path / "notes.txt").write_text("not an image")
    return tmp_path / "images"


def test_folder_sources_are_sorted_checked_and_named(folder, tmp_path):
    files = image_files(str(folder))
    assert [f.rsplit("/", 1)[-1] for f in files] == ["a.jpg", "b.png"]  # recursive, sorted, images only
    source, bad = ImageSource.from_folder(str(folder)).scan(min_size=30)
    assert len(source) == 2 and bad == [] and source.size(0) == (40, 30) and source.load(1).mode == "RGB"
    with pytest.raises(ValueError, match=r"a.jpg is 40x30, smaller than --resolution 32"):
        ImageSource.from_folder(str(folder)).scan(min_size=32)
    with pytest.raises(ValueError, match="is not a folder"):
        image_files(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="--validation_data_dir .*holds no images"):
        ImageSource.from_folder(str(tmp_path / "empty"), "--validation_data_dir")
    (folder / "nested" / "c.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*c.png"):
        read_images(str(folder))


def test_prepare_image_crops_the_centre_square(folder):
    image = Image.open(image_files(str(folder))[1])  # b.png, 40x30
    x = prepare_image(image, 24)
    assert x.shape == (3, 24, 24) and -1 <= x.min() and x.max() <= 1
    batch = load_images(image_files(str(folder)), 16)
    assert batch.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="multiple of 8"):
        prepare_image(image, 20)
    with pytest.raises(ValueError, match="smaller than --resolution 32"):
        prepare_image(image, 32, name="b.png")


def test_dataset_source_reads_an_image_folder_offline(folder):
    (folder / "nested" / "notes.txt").unlink()  # else `datasets` reads the folder as text
    named = read_images(dataset_name=str(folder), max_images=1)
    assert len(named) == 1 and named[0][0] == "dataset row 0" and named[0][1].mode == "RGB"
    with pytest.raises(ValueError, match="--image_column pixels"):
        read_images(dataset_name=str(folder), image_column="pixels")
    with pytest.raises(ValueError, match="give one of"):
        read_images()


def test_random_crops_are_a_function_of_the_generator():
    images = [torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8) for _ in range(3)]
    a = random_crops(images, 8, 5, torch.Generator().manual_seed(1))
    b = random_crops(images, 8, 5, torch.Generator().manual_seed(1))
    assert a.shape == (5, 3, 8, 8) and torch.equal(a, b) and -1 <= a.min() and a.max() <= 1
    assert not torch.equal(a, random_crops(images, 8, 5, torch.Generator().manual_seed(2)))


def test_photo_crops_refuse_bad_sizes_and_counts():
    from sd_sparse.data import photo_crops, reference_split

    train, held = reference_split()
    crops = photo_crops(held.values(), 64, 3, seed=0)
    assert crops.shape == (3, 3, 64, 64) and crops.min() >= -1 and crops.max() <= 1
    assert torch.equal(crops, photo_crops(held.values(), 64, 3, seed=0))  # seeded
    assert set(train).isdisjoint(held) and len(held) == 2
    with pytest.raises(ValueError, match="`count` must be >= 1"):
        photo_crops(held.values(), 64, 0)
    with pytest.raises(ValueError, match="`resolution` must be a multiple of 8"):
        photo_crops(held.values(), 100, 1)
    with pytest.raises(ValueError, match="no photograph is at least 4096"):
        photo_crops(held.values(), 4096, 1)
