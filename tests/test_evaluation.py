"""Evaluation: the baseline generator and the "wash away" effect, the built-in segmenter,
feature extractors, and ``spade-tf evaluate`` end to end on a tiny trained checkpoint."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from spade_tf.config import load_config
from spade_tf.networks import build_networks
from spade_tf.semantics import to_semantics

# Tiny synthscapes models; O(1) weights (gain 1) so that the SPADE side is far from zero.
SYNTH = ["data.dataset=synthscapes", "model.num_classes=9", "model.contain_dontcare=false",
         "data.load_size=64", "data.synth_train_size=16", "data.synth_val_size=16"]


def _uniform_semantics(config, class_id, size=64):
    label = tf.fill([1, size, size], class_id)
    instance = tf.zeros([1, size, size], tf.int32)  # one instance: no edges
    return to_semantics(label, instance, config=config, dtype=keras.config.floatx())


# ----------------------------------------------------------------------------- wash away


def test_baseline_first_conv_and_instance_norm_wash_away_a_uniform_label_map(float64):
    """Park et al. Sec. 3.2: a uniform label map through conv + instance norm gives the same
    (zero) activation for every class, away from the zero-padded borders; SPADE's modulated
    activations of the same normalized input differ by class."""
    config = load_config("tiny", SYNTH + ["model.generator=baseline", "model.init_gain=1.0"])
    keras.utils.set_random_seed(0)
    baseline = build_networks(config, discriminator=False).generator
    conv, norm = baseline.encoder_layers[0]
    washed = []
    for c in range(config.model.num_classes):
        y = conv(_uniform_semantics(config, c))
        spatial_std = lambda t: float(tf.reduce_max(tf.math.reduce_std(t, axis=[1, 2])))  # noqa: E731
        assert spatial_std(y[:, 1:-1, 1:-1]) < 1e-12  # every channel constant inside ...
        assert spatial_std(y) > 1e-3  # ... but not at the borders
        interior = y[:, 1:-1, 1:-1]
        washed.append(norm(interior).numpy())  # instance norm + learned affine
    washed = np.stack(washed)
    normalized = [norm.param_free_norm(conv(_uniform_semantics(config, c))[:, 1:-1, 1:-1]).numpy()
                  for c in range(config.model.num_classes)]
    assert np.max(np.abs(normalized)) < 1e-9  # zero for every class ...
    baseline_spread = float(np.max(np.abs(washed - washed[0])))
    assert baseline_spread < 1e-9  # ... so after the affine (beta) every class looks the same

    spade_config = load_config("tiny", SYNTH + ["model.init_gain=1.0"])
    spade = build_networks(spade_config, discriminator=False).generator.head_0.norm_0
    x = tf.zeros([1, 64, 64, spade.param_free_norm.moving_mean.shape[0]], tf.float64)
    outs = np.stack([spade(x, _uniform_semantics(spade_config, c)).numpy()[:, 1:-1, 1:-1]
                     for c in range(spade_config.model.num_classes)])
    # every pair of classes gets its own activation
    pair_gaps = [float(np.max(np.abs(outs[i] - outs[j])))
                 for i in range(len(outs)) for j in range(i + 1, len(outs))]
    assert min(pair_gaps) > 1e-2, min(pair_gaps)


def test_baseline_is_a_config_switch_with_the_same_decoder():
    spade = build_networks(load_config("tiny", SYNTH), discriminator=False).generator
    base = build_networks(load_config("tiny", SYNTH + ["model.generator=baseline"]),
                          discriminator=False).generator
    assert [b.name for b in base.blocks] == [b.name for b in spade.blocks]
    assert all(type(b.norm_0).__name__ == "AffineNorm" for b in base.blocks)
    assert not hasattr(base, "fc") and len(base.encoder_layers) == 6
    sem = _uniform_semantics(load_config("tiny", SYNTH), 2)
    assert base(sem).shape == spade(sem).shape == (1, 64, 64, 3)


# ----------------------------------------------------------------------------- extractors


@pytest.fixture(scope="module")
def random_inception():
    from spade_tf.evaluation import inception_extractor

    return inception_extractor(None, random_init=True)


def test_inception_needs_a_local_weights_file(tmp_path):
    from spade_tf.evaluation import inception_extractor

    with pytest.raises(FileNotFoundError, match="--inception-weights PATH"):
        inception_extractor(None)
    with pytest.raises(FileNotFoundError, match="no such file"):
        inception_extractor(str(tmp_path / "missing.h5"))
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="bad.weights.h5"):
        inception_extractor(str(bad))


@pytest.mark.slow
@pytest.mark.xdist_group("evaluation")
def test_fid_of_random_inception_features_is_zero_for_a_set_and_grows_with_noise(random_inception):
    rng = np.random.default_rng(0)
    images = np.tanh(rng.normal(size=(10, 32, 32, 3))).astype(np.float32)
    assert "RANDOM" in random_inception.name
    from spade_tf import metrics

    base = random_inception(images)
    assert base.shape == (10, 2048)
    fids = [metrics.fid(base, random_inception(np.clip(images + s * rng.normal(size=images.shape), -1, 1)
                                                .astype(np.float32))) for s in (0.0, 0.2, 0.6)]
    assert abs(fids[0]) < 1e-6 * max(1.0, fids[-1])
    assert fids[0] < fids[1] < fids[2], fids


@pytest.mark.slow
@pytest.mark.xdist_group("evaluation")
def test_inception_weights_file_round_trips(tmp_path, random_inception):
    """A weights file is really read: a saved random InceptionV3 loads to the same features."""
    from spade_tf.evaluation import inception_extractor

    keras.utils.set_random_seed(5)
    net = keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg",
                                         input_shape=(299, 299, 3))
    path = tmp_path / "inception_notop.weights.h5"
    net.save_weights(path)
    loaded = inception_extractor(str(path))
    x = np.tanh(np.random.default_rng(1).normal(size=(2, 299, 299, 3))).astype(np.float32)
    assert path.name in loaded.name
    np.testing.assert_allclose(loaded(x), net(x, training=False).numpy(), atol=1e-5)
    assert np.max(np.abs(loaded(x) - random_inception(x))) > 1e-3  # not the default init


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny checkpoint trained 4 steps, and a built-in segmenter trained 30 steps."""
    from spade_tf.segmenter import train_segmenter
    from spade_tf.training import train

    root = tmp_path_factory.mktemp("evaluation")
    config = load_config("tiny", SYNTH + ["train.batch_size=2", "train.max_steps=4"])
    train(config, root / "run", verbose=0)
    info = train_segmenter(config, root / "segmenter", steps=30, batch_size=4, width=8,
                           progress=False)
    return root, info


@pytest.mark.slow
@pytest.mark.xdist_group("evaluation")
def test_train_segmenter_writes_a_loadable_folder_with_its_ceiling(trained):
    from spade_tf.evaluation import load_segmenter

    root, info = trained
    ceiling = info["ceiling_on_real_val"]
    assert 0.0 <= ceiling["miou"] <= 1.0 and len(ceiling["per_class_iou"]) == 9
    seg = load_segmenter(str(root / "segmenter"), 9)
    assert seg.predict(np.zeros((1, 64, 64, 3), np.float32)).shape == (1, 64, 64)
    with pytest.raises(ValueError, match="trained for 9 classes"):
        load_segmenter(str(root / "segmenter"), 4)


@pytest.mark.slow
@pytest.mark.xdist_group("evaluation")
def test_evaluate_cli_writes_a_report_with_every_metric(trained, capsys):
    from PIL import Image

    from spade_tf.cli import main

    root, _ = trained
    out = root / "eval"
    assert main(["evaluate", "--checkpoint", str(root / "run"), "--segmenter", str(root / "segmenter"),
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "KID" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["images"] == 16 and m["generator"] == "spade"
    for part in ("generated", "real_ceiling"):
        s = m["segmentation"][part]
        assert set(s) >= {"miou", "pixel_accuracy", "mean_class_accuracy", "per_class_iou"}
        assert 0 <= s["miou"] <= 1 and len(s["per_class_iou"]) == 9
    assert "segmenter context features" in m["extractor"]
    assert np.isfinite(m["kid"]["mean"]) and m["kid"]["subset_size"] == 8 and m["kid"]["std"] > 0
    assert np.isfinite(m["fid"]) and m["fid"] >= 0
    page = (out / "report.html").read_text()
    assert "mIoU" in page and "KID" in page and "Per-class IoU" in page and "sky" in page
    grid = Image.open(out / "report.png")
    assert grid.size == (3 * 64 + 2 * 4, 8 * 64 + 7 * 4)  # 8 rows of label | generated | real


@pytest.mark.slow
@pytest.mark.xdist_group("evaluation")
def test_evaluate_with_inception_and_without_a_segmenter(trained, random_inception):
    from spade_tf.evaluation import evaluate

    root, _ = trained
    m = evaluate(root / "run", root / "eval_inception", max_images=8, progress=False,
                 extractor=random_inception)
    assert m["images"] == 8 and "RANDOM" in m["extractor"] and "segmentation" not in m
    assert any("no segmenter" in n for n in m["notes"])
    assert any("singular" in n for n in m["notes"])  # 8 images, 2048-d features


@pytest.mark.slow
@pytest.mark.xdist_group("evaluation")
def test_savedmodel_segmenter_and_extractor_plug_in(trained, tmp_path):
    """A user's SavedModel (here: the built-in segmenter exported with one image input) gives
    the same predictions and features as the built-in folder."""
    from spade_tf.evaluation import load_segmenter, savedmodel_extractor, segmenter_features
    from spade_tf.segmenter import load_builtin_segmenter

    root, _ = trained
    model, _ = load_builtin_segmenter(root / "segmenter")
    spec = tf.TensorSpec([None, 64, 64, 3], tf.float32, name="image")
    module = tf.Module()
    # The variables, not the Keras model (whose own traced endpoint has no static image size).
    module.weights = list(model.variables)
    logits = tf.function(lambda image: {"logits": model(image, training=False)[0]}, input_signature=[spec],
                    autograph=False)
    feats = tf.function(lambda image: {"features": model(image, training=False)[1]}, input_signature=[spec],
                    autograph=False)
    tf.saved_model.save(module, str(tmp_path / "seg"), signatures={"serving_default": logits})
    tf.saved_model.save(module, str(tmp_path / "feat"), signatures={"serving_default": feats})
    x = np.tanh(np.random.default_rng(2).normal(size=(3, 64, 64, 3))).astype(np.float32)
    builtin = load_segmenter(str(root / "segmenter"), 9)
    plugged = load_segmenter(str(tmp_path / "seg"), 9)
    assert plugged.name.startswith("SavedModel")
    np.testing.assert_array_equal(plugged.predict(x), builtin.predict(x))
    np.testing.assert_allclose(savedmodel_extractor(str(tmp_path / "feat"))(x),
                               segmenter_features(str(root / "segmenter"))(x), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="not a SavedModel folder"):
        load_segmenter(str(tmp_path), 9)
