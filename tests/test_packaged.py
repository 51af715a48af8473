"""Packed checkpoints (``spade-tf pack``) and the model shipped in the package
(``spade_tf.pretrained``): float16 weights that load as the run's inference generator, a card
whose numbers ``spade-tf evaluate`` reproduces, and a fresh install that paints and
synthesizes with no training."""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.request

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_SYNTHSCAPES

pytestmark = pytest.mark.xdist_group("packaged")


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A tiny run (4 steps, with a moving average), a tiny segmenter, and the run packed."""
    from spade_tf.config import load_config
    from spade_tf.packaging import pack
    from spade_tf.segmenter import train_segmenter
    from spade_tf.training import train

    root = tmp_path_factory.mktemp("packaged")
    config = load_config("tiny", TINY_SYNTHSCAPES + [
        "train.max_steps=4", "train.ema_decay=0.9", "train.ema_stat_batches=2",
        "data.synth_train_size=16", "data.synth_val_size=8"])
    train(config, root / "run", verbose=0)
    train_segmenter(config, root / "segmenter", steps=20, batch_size=4, width=8, progress=False)
    card = pack(root / "run", root / "model", segmenter=root / "segmenter",
                command="spade-tf train --config tiny (test)", minutes=0.5)
    return dict(root=root, config=config, card=card, model=root / "model")


def test_pack_writes_float16_weights_that_load_as_the_runs_inference_generator(packed):
    import tensorflow as tf

    from spade_tf.ema import inference_generator
    from spade_tf.networks import PACKED_WEIGHTS, load_networks
    from spade_tf.semantics import to_semantics

    model = packed["model"]
    assert sorted(p.name for p in model.iterdir()) == [
        "card.json", "card.md", "config.yaml", PACKED_WEIGHTS, "samples.png", "segmenter"]
    with np.load(model / PACKED_WEIGHTS) as data:
        floats = [data[k] for k in data.files if k.startswith("w") and data[k].dtype.kind == "f"]
    assert floats and all(a.dtype == np.float16 for a in floats)

    run_nets, config = load_networks(packed["root"] / "run", generator=True, discriminator=False)
    assert run_nets.ema_generator is not None
    reference, note = inference_generator(run_nets, config)
    nets, packed_config = load_networks(model)
    assert nets.discriminator is None and nets.ema_generator is None
    assert packed_config.train.ema_decay == 0.0  # the packed G already is the average
    assert nets.generator_note == f"{note}; packed as float16"
    for a, b in zip(nets.generator.weights, reference.weights):
        assert a.path == b.path and a.dtype == b.dtype  # float32 again
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-3, atol=1e-4)
    label = np.random.default_rng(0).integers(0, 9, (2, 64, 64)).astype(np.int32)
    sem = to_semantics(tf.constant(label), tf.constant(label), config=config)
    got = nets.generator(sem, training=False).numpy()
    want = reference(sem, training=False).numpy()
    assert np.abs(got - want).max() < 0.02, np.abs(got - want).max()  # float16 weights


def test_the_card_states_the_training_and_evaluate_reproduces_its_scores(packed, capsys):
    from spade_tf.cli import main
    from spade_tf.packaging import CARD_TOLERANCE

    card = packed["card"]
    assert json.loads((packed["model"] / "card.json").read_text()) == card
    assert card["steps"] == 4 and card["minutes"] == 0.5
    assert card["command"] == "spade-tf train --config tiny (test)"
    assert card["scores"]["images"] == 8
    assert card["weights"].startswith("ema_generator (decay 0.9") and "float16" in card["weights"]
    md = (packed["model"] / "card.md").read_text()
    assert f"{card['scores']['miou']:.4f}" in md and "samples.png" in md
    assert card["evaluate"] == f"spade-tf evaluate --checkpoint pretrained:model --out eval"
    out = packed["root"] / "eval"
    assert main(["evaluate", "--checkpoint", str(packed["model"]), "--out", str(out),
                 "--quiet"]) == 0  # the packed segmenter/ by default
    m = json.loads((out / "metrics.json").read_text())
    assert abs(m["segmentation"]["generated"]["miou"] - card["scores"]["miou"]) <= CARD_TOLERANCE["miou"]
    assert abs(m["kid"]["mean"] - card["scores"]["kid"]) <= CARD_TOLERANCE["kid"]


def test_a_packed_model_refuses_what_it_does_not_hold(packed, tmp_path):
    import shutil

    from spade_tf.networks import PACKED_WEIGHTS, load_networks

    with pytest.raises(ValueError, match="holds the generator only, no discriminator"):
        load_networks(packed["model"], discriminator=True)
    bad = tmp_path / "bad"
    shutil.copytree(packed["model"], bad)
    with np.load(bad / PACKED_WEIGHTS) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["names"] = arrays["names"][::-1]
    np.savez(bad / PACKED_WEIGHTS, **arrays)
    with pytest.raises(ValueError, match="generator.npz: cannot load the packed generator: the "
                                         "weights' names differ"):
        load_networks(bad)


def test_cli_pack_and_a_missing_packaged_model_fail_in_one_line(packed, tmp_path, capsys):
    from spade_tf.cli import main

    out = tmp_path / "model"
    assert main(["pack", "--checkpoint", str(packed["root"] / "run"), "--segmenter",
                 str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--segmenter" in err and "nope" in err and "segmenter.json" in err
    assert not out.exists()  # nothing half-written
    assert main(["pack", "--checkpoint", str(packed["root"] / "run"), "--segmenter",
                 str(packed["root"] / "segmenter"), "--out", str(packed["model"])]) == 2
    assert "exists and is not empty (use --overwrite)" in capsys.readouterr().err
    assert main(["synthesize", "--model", "pretrained:nope", "--labels", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no packaged model 'nope'" in err


def test_pretrained_names_the_packaged_models(tmp_path):
    from spade_tf import pretrained

    assert pretrained.resolve(tmp_path) == tmp_path  # a path stays a path
    with pytest.raises(FileNotFoundError, match="no packaged model 'nope'"):
        pretrained.resolve("pretrained:nope")
    if pretrained.DEFAULT in pretrained.available():
        assert pretrained.resolve("pretrained") == pretrained.FOLDER / pretrained.DEFAULT


# ----------------------------------------------------------------------------- the shipped model

@pytest.fixture(scope="module")
def shipped():
    from spade_tf import pretrained

    # Not a skip: the package promises a model that works with no training.
    assert pretrained.DEFAULT in pretrained.available(), (
        f"no packaged model {pretrained.DEFAULT!r} in {pretrained.FOLDER} "
        f"(scripts/train_packaged_model.sh makes it)")
    folder = pretrained.FOLDER / pretrained.DEFAULT
    return dict(folder=folder, card=json.loads((folder / "card.json").read_text()))


def test_the_shipped_model_is_small_and_has_its_card(shipped):
    folder, card = shipped["folder"], shipped["card"]
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert total <= 10 * 2**20, total  # the limit: 10 MB in the package
    for key in ("command", "steps", "minutes", "weights"):
        assert card[key], key
    assert card["scores"]["images"] == 200


@pytest.mark.slow
def test_the_shipped_model_paints_in_the_studio_and_synthesizes_with_no_model_given(shipped, tmp_path):
    from spade_tf.cli import main
    from spade_tf.data.io import read_index_map
    from spade_tf.studio import start_studio

    server = start_studio("pretrained", port=0)  # what `spade-tf studio` with no --model loads
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(server.url + "studio/info") as r:
            info = json.loads(r.read())
        assert info["backend"].startswith("checkpoint") and info["examples"] == 200
        with urllib.request.urlopen(server.url + "studio/example?index=3") as r:
            ex = json.loads(r.read())
        label = np.frombuffer(base64.b64decode(ex["label_b64"]), np.uint8).reshape(64, 64)
        png = io.BytesIO()
        Image.fromarray(label, mode="L").save(png, format="PNG")
        row = {"label_png": {"b64": base64.b64encode(png.getvalue()).decode()}}
        if info["use_instance"]:
            inst = np.frombuffer(base64.b64decode(ex["instance_b64"]), "<u2").reshape(64, 64)
            buf = io.BytesIO()
            Image.fromarray(inst.astype(np.uint16)).save(buf, format="PNG")
            row["instance_png"] = {"b64": base64.b64encode(buf.getvalue()).decode()}
        if info["has_latent"]:
            row["seed"] = 0
        req = urllib.request.Request(
            server.url + f"v1/models/{info['name']}:predict", method="POST",
            data=json.dumps({"signature_name": "png", "instances": [row]}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            answer = json.loads(r.read())
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(
            answer["predictions"][0]["image_png_bytes"]["b64"]))))
        assert image.shape == (64, 64, 3) and image.std() > 10  # a picture, not a flat field
    finally:
        server.shutdown()
        server.server_close()
    # synthesize with no --model: the packaged one, the studio's image
    Image.fromarray(label, mode="L").save(tmp_path / "map.png")
    if info["use_instance"]:
        Image.fromarray(inst.astype(np.uint16)).save(tmp_path / "map_inst.png")
    args = ["synthesize", "--labels", str(tmp_path / "map.png"), "--out", str(tmp_path / "out"),
            "--quiet"] + (["--instance", str(tmp_path / "map_inst.png")] if info["use_instance"] else [])
    assert main(args) == 0
    synthesized = np.asarray(Image.open(tmp_path / "out" / "map.png")).astype(int)
    assert np.abs(synthesized - image.astype(int)).max() <= 1
    assert read_index_map(tmp_path / "map.png", "map").shape == (64, 64)


@pytest.mark.slow
def test_evaluate_reproduces_the_shipped_models_card(shipped, tmp_path):
    from spade_tf.evaluation import evaluate
    from spade_tf.packaging import CARD_TOLERANCE

    card = shipped["card"]["scores"]
    m = evaluate("pretrained", tmp_path, progress=False)  # its own segmenter/ by default
    got = m["segmentation"]["generated"]
    print(f"card: mIoU {card['miou']:.4f}, KID {card['kid']:.4f}; now: mIoU {got['miou']:.4f}, "
          f"KID {m['kid']['mean']:.4f}")
    assert abs(got["miou"] - card["miou"]) <= CARD_TOLERANCE["miou"]
    assert abs(m["kid"]["mean"] - card["kid"]) <= CARD_TOLERANCE["kid"]
    assert abs(m["segmentation"]["real_ceiling"]["miou"] - card["ceiling_miou"]) <= 1e-3
