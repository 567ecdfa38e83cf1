"""`TrainingDataConfig`: the typed configuration of `build_training_data`, the flags built from it, errors
that name the field for Python callers and the flag for the scripts, and the old flag paths."""

import argparse
import dataclasses

import pytest
import torch
from test_training_data import make_folder, parse, same, take

from sd_sparse.data import TrainingDataConfig, add_data_arguments, build_training_data, check_data_arguments


def test_the_flags_are_the_fields_with_their_defaults():
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    flags = {action.dest for action in parser._actions if action.dest != "help"}
    assert flags == {f.name for f in dataclasses.fields(TrainingDataConfig)}
    assert TrainingDataConfig.from_namespace(parse()) == TrainingDataConfig()
    args = parse("--resolution", 16, "--no_random_flip", "--center_crop", "--validation_split", 0.25)
    args.train_batch_size = 4  # a script's other flags are ignored
    config = TrainingDataConfig.from_namespace(args)
    assert config == TrainingDataConfig(resolution=16, random_flip=False, center_crop=True, validation_split=0.25)


def test_a_config_gives_the_batches_and_split_of_its_flags(tmp_path):
    folder = make_folder(tmp_path / "images", 12)
    args = parse("--train_data_dir", folder, "--resolution", 16, "--validation_split", 0.25)
    config = TrainingDataConfig(train_data_dir=str(folder), resolution=16, validation_split=0.25)
    from_flags = build_training_data(args, batch_size=4, seed=1, num_validation_images=3)
    from_config = build_training_data(config, batch_size=4, seed=1, num_validation_images=3)
    assert torch.equal(from_flags.validation, from_config.validation)
    assert from_flags.num_train_images == from_config.num_train_images == 9
    assert same(take(from_flags.batches, 4), take(from_config.batches, 4))


@pytest.mark.parametrize(
    "values,field",
    [
        ({"train_data_dir": "a", "dataset_name": "b"}, "train_data_dir"),
        ({"streaming": True}, "streaming"),
        ({"max_images": 0}, "max_images"),
        ({"repeats": 0}, "repeats"),
        ({"dataloader_num_workers": -1}, "dataloader_num_workers"),
        ({"shuffle_buffer_size": 0}, "shuffle_buffer_size"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"resolution": 12}, "resolution"),
        ({"resolution": 32, "resize_resolution": 16}, "resize_resolution"),
    ],
)
def test_errors_name_the_field_for_a_config_and_the_flag_for_flags(values, field):
    with pytest.raises(ValueError, match=f"`{field}` \\(--{field}\\)"):
        build_training_data(TrainingDataConfig(**values), batch_size=2)
    args = parse()
    for name, value in values.items():
        setattr(args, name, value)
    with pytest.raises(ValueError) as error:
        check_data_arguments(args)
    assert f"--{field}" in str(error.value) and f"`{field}`" not in str(error.value)


def test_reading_errors_name_the_field_for_a_config(tmp_path):
    with pytest.raises(ValueError, match=r"`train_data_dir` \(--train_data_dir\) .* is not a folder"):
        build_training_data(TrainingDataConfig(train_data_dir=str(tmp_path / "missing")), batch_size=2)
    folder = make_folder(tmp_path / "images", 1)
    with pytest.raises(ValueError, match=r"`validation_split` \(--validation_split\) 0.1 needs at least 2 usable"):
        build_training_data(TrainingDataConfig(train_data_dir=str(folder), resolution=16), batch_size=1)
    with pytest.raises(ValueError, match=r"smaller than `resolution` \(--resolution\) 64\. .*`skip_bad_images`"):
        build_training_data(TrainingDataConfig(train_data_dir=str(folder), resolution=64), batch_size=1)


def test_the_flags_old_paths_still_work():
    from sd_sparse.data import arguments, training_data

    for name in ("BooleanFlag", "add_data_arguments", "check_data_arguments"):
        with pytest.warns(FutureWarning, match=f"training_data.{name} is deprecated: use sd_sparse.data.arguments"):
            assert getattr(training_data, name) is getattr(arguments, name)
