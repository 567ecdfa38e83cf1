"""The one data pipeline (sd_sparse.data.training_data): transforms, sampler, workers, sharding, resume,
streams, bad files and the held-out split."""

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from sd_sparse.data import (
    BadImageError,
    EpochSampler,
    ImageDataset,
    ImageSource,
    ImageTransform,
    add_data_arguments,
    build_training_data,
    collate_images,
    prepare_image,
)


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def make_folder(path, count, size=(40, 36), nested=True):
    """`count` distinct PNG images (each a constant colour plus noise), half of them one level down."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = path / "sub" if nested and i % 2 else path
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:04d}.png")
    return path


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "images", 12)


@pytest.fixture
def square(tmp_path):
    """12 images of 40x40: at --resolution 40 with centre crops and no flips, a crop is the whole image."""
    return make_folder(tmp_path / "square", 12, size=(40, 40), nested=False)


def take(stream, count):
    return [next(stream).cpu() for _ in range(count)]


def same(xs, ys):
    return len(xs) == len(ys) and all(torch.equal(x, y) for x, y in zip(xs, ys))


# transforms ---------------------------------------------------------------------------------------


def test_transform_crops_scales_and_flips_as_documented():
    pixels = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    as_tensor = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1
    # native scale, centre crop: exactly the centre pixels
    centre = ImageTransform(16, center_crop=True)(image)
    assert torch.equal(centre, as_tensor[:, 7:23, 17:33])
    # a random crop is some 16x16 window of the image, and a function of the generator
    crop = ImageTransform(16)(image, torch.Generator().manual_seed(3))
    windows = as_tensor.unfold(1, 16, 1).unfold(2, 16, 1).permute(1, 2, 0, 3, 4).reshape(-1, 3, 16, 16)
    assert (windows == crop).flatten(1).all(1).any()
    assert torch.equal(crop, ImageTransform(16)(image, torch.Generator().manual_seed(3)))
    # flips: about half of them, each the mirror of the unflipped crop
    flips = [
        ImageTransform(16, center_crop=True, random_flip=True)(image, torch.Generator().manual_seed(s))
        for s in range(40)
    ]
    flipped = [torch.equal(f, centre.flip(-1)) for f in flips]
    assert all(torch.equal(f, centre) or g for f, g in zip(flips, flipped)) and 10 <= sum(flipped) <= 30
    # scale then centre crop = the centre square scaled (prepare_image); never scaled up
    assert torch.equal(ImageTransform(24, resize_resolution=24, center_crop=True)(image), prepare_image(image, 24))
    assert torch.equal(ImageTransform(16, resize_resolution=64, center_crop=True)(image), centre)
    with pytest.raises(BadImageError, match="photo is 50x30, smaller than --resolution 32"):
        ImageTransform(32, center_crop=True)(image, name="photo")
    with pytest.raises(ValueError, match="multiple of 8"):
        ImageTransform(20)
    with pytest.raises(ValueError, match="resize_resolution"):
        ImageTransform(32, resize_resolution=16)


# map-style: dataset, sampler, workers, resume, shards ----------------------------------------------


def test_samples_are_functions_of_their_key_and_epochs_differ(folder):
    source, _ = ImageSource.from_folder(str(folder)).scan(16)
    dataset = ImageDataset(source, ImageTransform(16, random_flip=True), seed=5, repeats=2)
    assert len(dataset) == 24
    assert torch.equal(dataset[3], dataset[3])
    assert not torch.equal(dataset[3], dataset[15]) and not torch.equal(dataset[3], dataset[27])
    whole = ImageDataset(source, ImageTransform(16, center_crop=True), repeats=2)
    assert torch.equal(whole[3], whole[15]) and torch.equal(whole[3], whole[27])  # keys 15, 27: image 3 again
    assert not torch.equal(whole[3], whole[4])
    sampler = EpochSampler(len(dataset), seed=5)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == list(range(24)) and sorted(second) == list(range(24, 48))
    assert [k - 24 for k in second] != first  # a new order each epoch


def test_batches_do_not_depend_on_the_worker_count_and_resume_exactly(folder):
    base = ["--train_data_dir", folder, "--resolution", 16, "--validation_split", 0.25]
    plain = build_training_data(parse(*base), batch_size=4, seed=1)
    assert plain.num_train_images == 9 and plain.batches_per_epoch == 3  # 12 images, 3 held out
    expected = take(plain.batches, 8)  # 2 epochs and 2 batches
    assert [len(b) for b in expected] == [4, 4, 1] * 2 + [4, 4]
    with_workers = build_training_data(parse(*base, "--dataloader_num_workers", 2), batch_size=4, seed=1)
    first = take(with_workers.batches, 4)
    assert same(first, expected[:4])
    state = with_workers.batches.state_dict()
    assert state["epoch"] == 1 and state["batch"] == 1
    resumed = build_training_data(parse(*base, "--dataloader_num_workers", 2), batch_size=4, seed=1)
    resumed.batches.load_state_dict(state)
    assert same(take(resumed.batches, 4), expected[4:])
    other_seed = build_training_data(parse(*base), batch_size=4, seed=2)
    assert not same(take(other_seed.batches, 2), expected[:2])


class TwoRanks:
    """What `build_training_data` uses of an Accelerator, for rank `rank` of 2 (no process group)."""

    num_processes = 2

    def __init__(self, rank):
        self.process_index = rank

    def prepare(self, loader):
        from accelerate.data_loader import prepare_data_loader

        return prepare_data_loader(loader, num_processes=2, process_index=self.process_index, put_on_device=False)

    def skip_first_batches(self, loader, num_batches):
        from accelerate.data_loader import skip_first_batches

        return skip_first_batches(loader, num_batches)


def crops_of(batches):
    return {tuple(crop.flatten()[:64].tolist()) for batch in batches for crop in batch}


def test_ranks_see_different_images_that_together_cover_the_epoch(square):
    args = parse("--train_data_dir", square, "--resolution", 40, "--center_crop", "--no_random_flip")
    args.validation_split = 0
    whole = build_training_data(args, batch_size=2)
    epoch = crops_of(take(whole.batches, whole.batches_per_epoch))
    assert len(epoch) == 12
    ranks = [build_training_data(args, TwoRanks(r), batch_size=2) for r in (0, 1)]
    assert [r.batches_per_epoch for r in ranks] == [3, 3]
    seen = [crops_of(take(r.batches, 3)) for r in ranks]
    assert not seen[0] & seen[1] and seen[0] | seen[1] == epoch
    # resuming rank 1 mid-epoch (accelerate's skip_first_batches on the sharded loader) is exact
    rank1 = build_training_data(args, TwoRanks(1), batch_size=2)
    expected = take(rank1.batches, 5)
    resumed = build_training_data(args, TwoRanks(1), batch_size=2)
    resumed.batches.load_state_dict({"epoch": 0, "batch": 2})
    assert same(take(resumed.batches, 3), expected[2:])


# held-out split, validation folder -----------------------------------------------------------------


def test_validation_is_held_out_by_image(square, folder, tmp_path):
    args = parse("--train_data_dir", square, "--resolution", 40, "--center_crop", "--validation_split", 0.25)
    data = build_training_data(args, batch_size=3, num_validation_images=3)
    training = crops_of(take(data.batches, data.batches_per_epoch))
    held = crops_of([data.validation])
    assert len(training) == 9 and len(held) == 3 and not training & held
    assert data.held_out and len(data.validation_dataset) == 3
    # the validation crops are the same in every run
    assert torch.equal(build_training_data(args, batch_size=3, num_validation_images=3).validation, data.validation)
    # a validation folder wins over the split: all 12 images train
    other = make_folder(tmp_path / "held", 2, size=(48, 48))
    args = parse("--train_data_dir", folder, "--resolution", 16, "--validation_data_dir", other)
    data = build_training_data(args, batch_size=3, num_validation_images=4)
    assert data.num_train_images == 12 and data.validation.shape == (4, 3, 16, 16) and len(data.validation_dataset) == 2
    args = parse("--train_data_dir", folder, "--resolution", 16, "--validation_split", 0)
    assert not build_training_data(args, batch_size=3).held_out


# bad files -----------------------------------------------------------------------------------------


def test_bad_files_stop_the_run_or_are_skipped_and_counted(folder):
    (folder / "broken.png").write_bytes(b"not an image")
    Image.new("RGB", (8, 8)).save(folder / "tiny.png")
    args = parse("--train_data_dir", folder, "--resolution", 16, "--validation_split", 0)
    with pytest.raises(BadImageError, match=r"broken.png.*--skip_bad_images"):
        build_training_data(args, batch_size=4)
    args.skip_bad_images = True
    data = build_training_data(args, batch_size=4)
    assert data.num_train_images == 12 and len(data.bad_images) == 2 and data.num_skipped() == 2
    assert any("tiny.png is 8x8" in error for error in data.bad_images)
    # a file whose header reads but whose pixels do not: caught when decoded, in a worker
    (folder / "broken.png").unlink()
    (folder / "tiny.png").unlink()
    good = (folder / "img0000.png").read_bytes()
    (folder / "img0000.png").write_bytes(good[: len(good) // 2])
    args.skip_bad_images = False
    args.dataloader_num_workers = 1
    args.validation_data_dir = str(folder / "sub")  # so that only the training loader meets the file
    data = build_training_data(args, batch_size=4)
    with pytest.raises(Exception, match="img0000.png: image file is truncated"):
        take(data.batches, 3)
    data.batches.close()
    args.skip_bad_images = True
    data = build_training_data(args, batch_size=4)
    batches = take(data.batches, 3)  # one epoch
    data.batches.close()
    assert sum(len(b) for b in batches) == 11 and data.num_skipped() == 1
    args.validation_data_dir = None  # the truncated file is a validation image too: passed over
    assert build_training_data(args, batch_size=4, num_validation_images=12).validation.shape[0] == 12


def test_flag_errors_name_the_flag(folder):
    cases = [
        (["--train_data_dir", folder, "--dataset_name", "x"], "one of --train_data_dir and --dataset_name"),
        (["--streaming"], "--streaming needs"),
        (["--max_images", 0], "--max_images"),
        (["--repeats", 0], "--repeats"),
        (["--dataloader_num_workers", -1], "--dataloader_num_workers"),
        (["--validation_split", 1.5], "--validation_split"),
        (["--resolution", 12], "multiple of 8"),
        (["--train_data_dir", folder, "--max_images", 1], "at least 2 usable images"),
    ]
    for argv, message in cases:
        with pytest.raises(ValueError, match=message):
            build_training_data(parse(*argv), batch_size=2)


# streams -------------------------------------------------------------------------------------------


def test_streams_split_by_node_hold_out_by_hash_and_replay_exactly(tmp_path):
    folder = make_folder(tmp_path / "stream", 16, size=(40, 40))
    base = ["--train_data_dir", folder, "--streaming", "--resolution", 40, "--center_crop", "--no-random_flip"]
    args = parse(*base, "--validation_split", 0.25, "--shuffle_buffer_size", 4)
    data = build_training_data(args, batch_size=2)
    assert data.num_train_images is None and data.held_out
    loader = torch.utils.data.DataLoader(data.validation_dataset, batch_size=4, collate_fn=collate_images)
    held = crops_of(batch["pixel_values"] for batch in loader)
    epoch = []
    while data.batches.epoch == 0:
        epoch.append(next(data.batches))
    training = crops_of(epoch[:-1])  # the last batch taken is the next epoch's first
    assert len(held) + len(training) == 16 and held and not held & training
    # two ranks: disjoint parts of the stream, together the training images
    ranks = []
    for rank in (0, 1):
        part = build_training_data(args, TwoRanks(rank), batch_size=2)
        batches = []
        while part.batches.epoch == 0:
            batches.append(next(part.batches))
        ranks.append(crops_of(batches[:-1]))
    assert not ranks[0] & ranks[1] and ranks[0] | ranks[1] == training
    # resume with workers: the epoch is replayed, the batches after the checkpoint are the same
    args = parse(*base[:-2], "--validation_split", 0, "--dataloader_num_workers", 2)
    expected = take(build_training_data(args, batch_size=3).batches, 10)  # 16 images: 6 batches an epoch
    resumed = build_training_data(args, batch_size=3)
    resumed.batches.load_state_dict({"epoch": 1, "batch": 2})
    assert same(take(resumed.batches, 2), expected[8:10])
    assert not same(expected[6:8], expected[:2])  # the next epoch is reshuffled


def test_large_jpegs_are_decoded_at_reduced_scale_when_scaled_down(tmp_path):
    from sd_sparse.data import read_image

    y, x = np.mgrid[0:480, 0:640] / 60.0
    pixels = (127 + 120 * np.stack([np.sin(x), np.cos(y), np.sin(x + y)], axis=-1)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    full = read_image(str(tmp_path / "big.jpg"))
    reduced = read_image(str(tmp_path / "big.jpg"), min_side=100)
    assert full.size == (640, 480) and reduced.size == (160, 120)  # 1/4 scale: the smallest not below 100
    transform = ImageTransform(96, resize_resolution=100, center_crop=True)
    a, b = transform(full), transform(reduced)
    psnr = 10 * torch.log10(4 / ((a - b) ** 2).mean())
    assert psnr > 35  # the same picture: DCT-domain scaling, then the same bicubic step
    source, _ = ImageSource.from_folder(str(tmp_path)).scan(96)
    dataset = ImageDataset(source, transform)
    assert torch.equal(dataset[0], b)  # the dataset decodes at reduced scale


def test_a_datasets_dataset_is_memory_mapped_and_read_as_bytes(square):
    args = parse("--dataset_name", square, "--resolution", 40, "--center_crop", "--no-random_flip")
    args.validation_split = 0
    data = build_training_data(args, batch_size=4)
    assert data.num_train_images == 12 and data.batches_per_epoch == 3
    from_dataset = crops_of(take(data.batches, 3))
    args = parse("--train_data_dir", square, "--resolution", 40, "--center_crop", "--no-random_flip")
    args.validation_split = 0
    folder_data = build_training_data(args, batch_size=4)
    assert from_dataset == crops_of(take(folder_data.batches, 3))  # the same 12 images
    with pytest.raises(ValueError, match="--image_column pixels is not in the dataset"):
        build_training_data(parse("--dataset_name", square, "--image_column", "pixels"), batch_size=4)
    with pytest.raises(ValueError, match="--dataset_name .* cannot be loaded"):
        build_training_data(parse("--dataset_name", square, "--dataset_config_name", "nope"), batch_size=4)


def test_a_shuffle_buffer_of_one_keeps_the_streams_order(square):
    args = parse("--train_data_dir", square, "--streaming", "--resolution", 40, "--center_crop", "--no-random_flip")
    args.validation_split = 0
    files = build_training_data(
        parse(
            "--train_data_dir", square, "--resolution", 40, "--center_crop", "--no-random_flip", "--validation_split", 0
        ),
        batch_size=12,
    )
    in_order = ImageDataset(files.batches.loader.dataset.source, ImageTransform(40, center_crop=True))
    expected = [in_order[i] for i in range(12)]
    args.shuffle_buffer_size = 1
    batch = next(build_training_data(args, batch_size=12).batches)
    assert same(list(batch), expected)  # one shard, a buffer of one: the folder's order
    args.shuffle_buffer_size = 12
    assert not same(list(next(build_training_data(args, batch_size=12).batches)), expected)


def test_a_streams_split_depends_on_image_content_not_location(tmp_path):
    """Streams that give only a local path are split by the file's bytes, so moving the data (another
    machine, another temp folder) keeps every image on its side of the split."""
    from sd_sparse.data.splits import held_out_by_hash as _held_out_by_hash

    a, b = make_folder(tmp_path / "a", 40, nested=False), make_folder(tmp_path / "b", 40, nested=False)
    sides = [
        [
            _held_out_by_hash({"image": {"path": str(root / f"img{i:04d}.png"), "bytes": None}}, "image", 0.5, True)
            for i in range(40)
        ]
        for root in (a, b)
    ]
    assert sides[0] == sides[1] and 0 < sum(sides[0]) < 40
    with_bytes = [
        _held_out_by_hash({"image": {"path": None, "bytes": (a / f"img{i:04d}.png").read_bytes()}}, "image", 0.5, True)
        for i in range(40)
    ]
    assert with_bytes == sides[0]
