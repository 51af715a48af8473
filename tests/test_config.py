"""Config: presets, strict loading, overrides, enums, geometry."""

from __future__ import annotations

import pytest

from spade_tf.config import (Config, ModelConfig, SpadeNorm, Upsampling, config_to_dict,
                             load_config, preset_names, save_config)


def test_every_preset_loads():
    names = preset_names()
    for required in ("ade20k", "cityscapes", "coco_stuff", "facades", "custom", "tiny"):
        assert required in names
    for name in names:
        assert isinstance(load_config(name), Config)


@pytest.mark.parametrize("name,channels,hw,batch", [
    ("ade20k", 151, (256, 256), 1),
    ("cityscapes", 36, (256, 512), 16),
    ("coco_stuff", 184, (256, 256), 1),
    ("facades", 13, (256, 256), 1),
])
def test_presets_carry_the_reference_defaults(name, channels, hw, batch):
    c = load_config(name)
    assert c.model.semantic_channels == channels
    assert c.model.output_hw == hw
    assert c.train.batch_size == batch
    assert c.model.spade_norm is SpadeNorm.SYNC_BATCH and c.model.base_filters == 64


def test_cityscapes_uses_more_and_fixed():
    c = load_config("cityscapes")
    assert c.model.num_upsampling_layers is Upsampling.MORE
    assert c.data.preprocess.value == "fixed"


@pytest.mark.parametrize("crop,ar,mode,latent,out", [
    (512, 2.0, "more", (4, 8), (256, 512)),
    (256, 2.0, "more", (2, 4), (128, 256)),
    (256, 4 / 3, "normal", (6, 8), (192, 256)),
    (256, 1.0, "most", (2, 2), (256, 256)),
])
def test_latent_and_output_size_match_the_reference(crop, ar, mode, latent, out):
    m = ModelConfig(crop_size=crop, aspect_ratio=ar, num_upsampling_layers=mode)
    assert m.latent_hw == latent
    assert m.output_hw == out


def test_unknown_key_is_an_error_naming_it(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("model:\n  num_clases: 10\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*unknown key 'model\.num_clases'.*did you mean "
                                         r"'model\.num_classes'"):
        load_config(f)


def test_unknown_section_is_an_error(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("modle:\n  num_classes: 10\n")
    with pytest.raises(ValueError, match="unknown key 'modle'"):
        load_config(f)


def test_enum_error_lists_allowed_values():
    with pytest.raises(ValueError, match=r"model\.spade_norm.*'sync_batch', 'batch', 'instance'"):
        load_config("tiny", ["model.spade_norm=group"])
    with pytest.raises(ValueError, match=r"'hinge', 'original', 'ls', 'w'"):
        load_config("tiny", ["loss.gan_mode=wgan"])


def test_wrong_types_are_errors():
    with pytest.raises(ValueError, match=r"model\.num_classes: expected an integer, got 'ten'"):
        load_config("tiny", ["model.num_classes=ten"])
    with pytest.raises(ValueError, match=r"model\.use_vae: expected true or false"):
        load_config("tiny", ["model.use_vae=1"])


def test_invalid_values_are_errors():
    with pytest.raises(ValueError, match=r"crop_size=16.*at least 32"):
        load_config("tiny", ["model.crop_size=16"])
    with pytest.raises(ValueError, match=r"spade_kernel_size=4 must be odd"):
        load_config("tiny", ["model.spade_kernel_size=4"])


def test_overrides_and_malformed_overrides():
    c = load_config("ade20k", ["model.base_filters=32", "train.lr=1e-3", "loss.vgg_weights=/x.npz"])
    assert c.model.base_filters == 32 and c.train.lr == 1e-3 and c.loss.vgg_weights == "/x.npz"
    with pytest.raises(ValueError, match="expected section.key=value"):
        load_config("tiny", ["model.base_filters"])
    with pytest.raises(ValueError, match="must be section.key"):
        load_config("tiny", ["base_filters=3"])


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match=r"unknown config 'ade20"):
        load_config("ade20")


def test_base_chain_and_save_round_trip(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("base: ade20k\nmodel:\n  base_filters: 16\n")
    c = load_config(f)
    assert c.model.num_classes == 150 and c.model.base_filters == 16
    saved = save_config(c, tmp_path / "run" / "config.yaml")
    assert load_config(saved) == c
    assert not list((tmp_path / "run").glob("*.tmp"))  # atomic write leaves nothing behind
    assert config_to_dict(c)["model"]["spade_norm"] == "sync_batch"


def test_base_loop_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ValueError, match="loops back"):
        load_config(tmp_path / "a.yaml")
