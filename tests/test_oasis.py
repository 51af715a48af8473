"""OASIS (boschresearch/OASIS) number for number: fixture F, made by running the official code,
through the public API (spade_tf.convert, the networks' calls, spade_tf.losses)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import import_fixture, max_err, nchw_to_nhwc
from spade_tf import losses
from spade_tf.config import Family, load_config
from spade_tf.semantics import to_semantics

ATOL = 1e-4


def _inputs(fx, config):
    sem = to_semantics(fx["in/label"][:, 0], config=config)
    return (sem, tf.constant(fx["in/z"]), tf.constant(nchw_to_nhwc(fx["in/image"])),
            tf.constant(nchw_to_nhwc(fx["in/labelmix_mask"]).astype(np.float32)))


def test_f_config_and_oasis_label_layout(fix_f, nets_f):
    nets, config = nets_f
    assert config.model.family is Family.OASIS
    assert config.model.semantic_channels == fix_f.meta["opt"]["semantic_nc"] == 6
    assert config.train.ema_decay == pytest.approx(0.9999)
    assert (config.train.lr_g, config.train.lr_d) == (1e-4, 4e-4)
    assert nets.ema_generator is not None and nets.encoder is None
    sem, *_ = _inputs(fix_f, config)
    np.testing.assert_array_equal(sem.numpy(), nchw_to_nhwc(fix_f["in/semantics"]).astype(np.float32))


def test_same_png_gives_different_layouts_for_spade_and_oasis():
    label = np.array([[[0, 1, 2, 255]]], np.int32)
    spade = load_config("tiny", ["model.use_instance=false"])  # 4 classes + dontcare
    oasis = load_config("tiny", ["model.use_instance=false", "model.generator=oasis"])
    a = np.argmax(to_semantics(label, config=spade).numpy(), -1)[0, 0]
    b = np.argmax(to_semantics(label, config=oasis).numpy(), -1)[0, 0]
    assert a.tolist() == [0, 1, 2, 4]  # SPADE: dontcare is the last channel
    assert b.tolist() == [0, 1, 2, 0]  # OASIS: the data's id 0 and 255 are dontcare, channel 0
    shifted = load_config("tiny", ["model.use_instance=false", "model.generator=oasis",
                                   "model.contain_dontcare=false"])
    c = np.argmax(to_semantics(label, config=shifted).numpy(), -1)[0, 0]
    assert c.tolist() == [1, 2, 3, 0]  # COCO-Stuff / synthscapes: every id moves up by one
    with pytest.raises(tf.errors.InvalidArgumentError, match="found 5"):
        to_semantics(np.array([[[5]]], np.int32), config=oasis)


def test_f_generator_eval_every_activation_and_ema(fix_f, nets_f):
    nets, config = nets_f
    sem, z, _, _ = _inputs(fix_f, config)
    image, acts = nets.generator(sem, noise=z, training=False, return_activations=True)
    assert max_err(image, nchw_to_nhwc(fix_f["out/fake_eval"])) <= ATOL
    keys = [k for k in fix_f.keys("act/") if k != "act/body.0.norm_0"]
    assert len(keys) == 9  # fc_in, fc, body.0-5, conv_img
    for key in keys:
        assert max_err(acts[key[4:]], nchw_to_nhwc(fix_f[key])) <= ATOL, key
    # the same noise as a 3D map: what the official code draws, broadcast
    noise = tf.constant(nchw_to_nhwc(fix_f["in/noise"]))
    assert max_err(nets.generator(sem, noise=noise), nchw_to_nhwc(fix_f["out/fake_eval"])) <= ATOL
    # OASIS' first SPADE layer reads cat(noise, one-hot): ours takes the two apart, the noise
    # as a vector or as a map
    fc = tf.constant(nchw_to_nhwc(fix_f["act/fc"]))
    for given in (z, noise):
        first = nets.generator.body_0.norm_0(fc, sem, noise=given)
        assert max_err(first, nchw_to_nhwc(fix_f["act/body.0.norm_0"])) <= ATOL
    ema = nets.ema_generator(sem, noise=z, training=False)
    assert max_err(ema, nchw_to_nhwc(fix_f["out/fake_ema_eval"])) <= ATOL


def test_f_generator_train_mode(fix_f):
    nets, config = import_fixture(fix_f)
    sem, z, _, _ = _inputs(fix_f, config)
    before = nets.generator.body_0.conv_0.u.numpy().copy()
    image = nets.generator(sem, noise=z, training=True)
    assert max_err(image, nchw_to_nhwc(fix_f["out/fake_train"])) <= ATOL
    assert not np.array_equal(before, nets.generator.body_0.conv_0.u.numpy())


def _d_eval(fx, nets_and_config):
    nets, config = nets_and_config
    sem, _, real, mask = _inputs(fx, config)
    fake = tf.constant(nchw_to_nhwc(fx["out/fake_eval"]))
    mixed = losses.labelmix_images(mask, real, fake)
    assert max_err(mixed, nchw_to_nhwc(fx["in/mixed_image"])) <= ATOL
    out = {}
    for kind, x in (("fake", fake), ("real", real), ("mixed", mixed)):
        out[kind] = nets.discriminator(x, training=False, return_activations=True)
    return sem, mask, out


def test_f_discriminator_blocks_and_logits(fix_f, nets_f):
    _, _, out = _d_eval(fix_f, nets_f)
    for kind in ("fake", "real", "mixed"):
        logits, acts = out[kind]
        assert logits.shape[-1] == 7  # N+1: channel 0 = fake
        assert max_err(logits, nchw_to_nhwc(fix_f[f"d/{kind}/logits"])) <= ATOL, kind
        keys = fix_f.keys(f"d/{kind}/body")
        assert len(keys) == (12 if kind != "mixed" else 0)
        for key in keys:
            assert max_err(acts[key.split("/")[-1]], nchw_to_nhwc(fix_f[key])) <= ATOL, key


def test_f_class_weights_targets_and_losses(fix_f, nets_f):
    sem, mask, out = _d_eval(fix_f, nets_f)
    np.testing.assert_allclose(losses.oasis_class_weights(sem).numpy(),
                               fix_f["loss/class_weights"], rtol=1e-5, atol=1e-6)
    assert max_err(losses.oasis_weight_map(sem), fix_f["loss/weight_map"]) <= ATOL
    np.testing.assert_array_equal(losses.oasis_targets(sem).numpy(), fix_f["loss/target_real"])
    ours = losses.oasis_losses(out["fake"][0], out["real"][0], out["mixed"][0], sem, mask,
                               lambda_labelmix=nets_f[1].loss.lambda_labelmix)
    for name in ("G_adv", "D_fake", "D_real", "D_labelmix"):
        assert abs(float(ours[name]) - float(fix_f[f"loss/{name}"])) <= ATOL, name
    d_total = ours["D_fake"] + ours["D_real"] + ours["D_labelmix"]
    assert abs(float(d_total) - float(fix_f["loss/D_total"])) <= ATOL
    assert abs(float(ours["D_labelmix"]) / 10.0 - float(fix_f["loss/labelmix_mse"])) <= ATOL


def test_f_losses_in_train_mode(fix_f):
    """``loss_train/``: each from a fresh import, with the official order of power iterations."""
    nets, config = import_fixture(fix_f)
    sem, z, real, mask = _inputs(fix_f, config)
    fake = nets.generator(sem, noise=z, training=True)
    g_adv = losses.oasis_real_loss(nets.discriminator(fake, training=True), sem,
                                   losses.oasis_weight_map(sem))
    assert abs(float(g_adv) - float(fix_f["loss_train/G_adv"])) <= ATOL
    nets, _ = import_fixture(fix_f)
    fake = nets.generator(sem, noise=z, training=True)
    d_fake = nets.discriminator(fake, training=True)
    d_real = nets.discriminator(real, training=True)
    d_mixed = nets.discriminator(losses.labelmix_images(mask, real, fake), training=True)
    ours = losses.oasis_losses(d_fake, d_real, d_mixed, sem, mask, 10.0)
    for name in ("D_fake", "D_real", "D_labelmix"):
        assert abs(float(ours[name]) - float(fix_f[f"loss_train/{name}"])) <= ATOL, name


def test_class_weights_absent_classes_and_global_batch():
    onehot = tf.one_hot(np.array([[[1, 1, 2, 0]], [[2, 2, 2, 0]]], np.int32), 4)  # class 3 absent
    w = losses.oasis_class_weights(onehot).numpy()
    # 8 pixels, n = 2 classes present (dontcare excluded): 8 / (2 * count)
    assert w[0] == 0 and np.isinf(w[3])
    np.testing.assert_allclose(w[1:3], [8 / (2 * 2), 8 / (2 * 4)])
    assert np.isfinite(losses.oasis_weight_map(onehot).numpy()).all()


def test_labelmix_mask_is_per_image_and_class():
    label = np.zeros((64, 8, 8), np.int32)
    label[:, :, 4:] = 1
    onehot = tf.one_hot(label, 3)
    mask = losses.labelmix_mask(onehot, seed=3).numpy()[..., 0]
    # every class region is wholly 0 or 1 within an image
    assert ((mask[:, :, :4] == mask[:, :1, :1]).all() and (mask[:, :, 4:] == mask[:, :1, 4:5]).all())
    left, right = mask[:, 0, 0], mask[:, 0, 4]
    # class 0 (dontcare) does not take class 1's bit: independent bits per image and class
    assert 0 < (left != right).mean() < 1 and 0 < left.mean() < 1


def test_f_round_trip_to_official(fix_f, nets_f):
    from spade_tf.convert import to_official

    state = to_official(nets_f[0])
    assert set(state) == {"netG", "netD", "netEMA"}
    for net in state:
        for key, value in state[net].items():
            np.testing.assert_allclose(value, fix_f.state[net][key], rtol=0, atol=0, err_msg=key)


# ----------------------------------------------------------------------------- the whole path

# The tests of the trained light model run on one xdist worker, so that it is trained once.
LIGHT_GROUP = pytest.mark.xdist_group("oasis_light")
LIGHT_STEPS = 120
LIGHT_SET = ["--set", "data.synth_train_size=64", "--set", "data.synth_val_size=16",
             # a short run: an average over ~10 steps, so that the averaged G has moved
             "--set", "train.ema_decay=0.9"]


@pytest.fixture(scope="session")  # session: a worker may run other files' tests in between
def light(tmp_path_factory):
    """``spade-tf train --config oasis_light`` for LIGHT_STEPS steps, then ``spade-tf export``
    with fp32 and full int8 (CLI subprocesses, as a user runs them)."""
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO

    root = tmp_path_factory.mktemp("oasis_light")
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    run, out = root / "run", root / "export"
    proc = subprocess.run([sys.executable, "-m", "spade_tf", "train", "--config", "oasis_light",
                           "--workdir", str(run), "--max-steps", str(LIGHT_STEPS), *LIGHT_SET],
                          capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([sys.executable, "-m", "spade_tf", "export", "--checkpoint", str(run),
                           "--out", str(out), "--tflite", "fp32,int8",
                           # fp32: the tests below hold its signatures to the fp32 TFLite file
                           "--precision", "fp32"],
                          capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "spade" / "1-export.json").read_text())
    return dict(root=root, run=run, out=out, env=env, report=report,
                saved_model=out / "spade" / "1", tflite=out / "spade" / "1-tflite")


@pytest.mark.slow
@LIGHT_GROUP
def test_oasis_light_exports_ema_weights_noise_signatures_and_full_int8(light):
    report = light["report"]
    assert report["weights"].startswith("ema_generator (decay 0.9; BN statistics refreshed over")
    assert set(report["signatures"]) == {"serving_default", "png", "seed", "noise", "noise_map"}
    int8 = report["tflite"]["int8"]
    assert "refused" not in int8 and int8["psnr_db_vs_fp32"] >= 30.0, int8
    assert report["tflite"]["fp32"]["max_abs_levels_vs_keras"] <= 1
    assert (light["tflite"] / "spade_int8.tflite").is_file()


@pytest.mark.slow
@LIGHT_GROUP
def test_oasis_saved_model_noise_is_a_seed_a_vector_or_a_map(light):
    from spade_tf.export import TFLiteRunner, latent_from_seed
    from spade_tf.synthesize import load_synthesizer

    loaded = tf.saved_model.load(str(light["saved_model"]))
    synth = load_synthesizer(light["saved_model"])
    label = np.zeros((2, 64, 64), np.int32)
    label[:, 32:] = 3
    label[1, :, 40:] = 6
    inst = label.copy()
    sigs = loaded.signatures
    seeded = sigs["seed"](label=tf.constant(label), instance=tf.constant(inst),
                          seed=tf.constant([1, 2], tf.int64))["image"].numpy()
    z = tf.stack([latent_from_seed(1, 64), latent_from_seed(2, 64)])
    vec = sigs["noise"](label=tf.constant(label), instance=tf.constant(inst), noise=z)["image"].numpy()
    noise_map = tf.broadcast_to(z[:, None, None, :], (2, 64, 64, 64))
    mapped = sigs["noise_map"](label=tf.constant(label), instance=tf.constant(inst),
                               noise_map=noise_map)["image"].numpy()
    np.testing.assert_array_equal(seeded, vec)
    # the map path gathers the noise where the vector path broadcasts it: the same values, but
    # oneDNN may sum in another order (seen: 1 level in 1 of 24576 values)
    assert np.abs(seeded.astype(int) - mapped.astype(int)).max() <= 1
    assert np.abs(seeded[0].astype(int) - sigs["seed"](
        label=tf.constant(label[:1]), instance=tf.constant(inst[:1]),
        seed=tf.constant([7], tf.int64))["image"].numpy()[0]).mean() > 0.5  # other noise, other image
    default = sigs["serving_default"](label=tf.constant(label), instance=tf.constant(inst))["image"]
    seed0 = sigs["seed"](label=tf.constant(label), instance=tf.constant(inst),
                         seed=tf.constant([0, 0], tf.int64))["image"]
    np.testing.assert_array_equal(default.numpy(), seed0.numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="noise_map must be float32"):
        sigs["noise_map"](label=tf.constant(label), instance=tf.constant(inst),
                          noise_map=noise_map[:, :32])
    # the .tflite takes the noise as a map, and synthesize feeds it the same noise
    runner = TFLiteRunner(light["tflite"] / "spade_fp32.tflite")
    tfl = runner(label=label, instance=inst, noise=noise_map.numpy())
    assert np.abs(tfl.astype(int) - seeded.astype(int)).max() <= 1
    assert np.abs(synth(label, inst, z.numpy()).astype(int) - seeded.astype(int)).max() == 0


@pytest.mark.slow
@LIGHT_GROUP
def test_oasis_synthesize_seed_gives_the_same_images_from_every_kind_of_model(light, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    label = np.zeros((64, 64), np.uint8)
    label[:20] = 0  # sky
    label[20:40] = 2  # mountain
    label[40:] = 3  # grass
    label[44:60, 10:30] = 6  # a building
    Image.fromarray(label).save(tmp_path / "scene.png")
    Image.fromarray(label).save(tmp_path / "scene_inst.png")
    outs = {}
    for kind, model in (("checkpoint", light["run"]), ("saved_model", light["saved_model"]),
                        ("tflite", light["tflite"] / "spade_fp32.tflite")):
        out = tmp_path / kind
        proc = subprocess.run([sys.executable, "-m", "spade_tf", "synthesize", "--model", str(model),
                               "--labels", str(tmp_path / "scene.png"), "--instance",
                               str(tmp_path / "scene_inst.png"), "--out", str(out), "--seed", "3",
                               "--num-samples", "2"], capture_output=True, text=True, timeout=600,
                              env=light["env"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[kind] = [np.asarray(Image.open(out / f"scene_s{k}.png")).astype(int) for k in (0, 1)]
        assert (out / "sheet.png").is_file()
    ref = outs["saved_model"]
    assert np.abs(ref[0] - ref[1]).mean() > 0.5  # seeds 3 and 4: two looks
    assert np.abs(outs["tflite"][0] - ref[0]).max() <= 1
    # the checkpoint refreshes the averaged G's statistics itself: the same batches, float rounding
    assert np.abs(outs["checkpoint"][0] - ref[0]).max() <= 2


def _region_change_fraction(generator, config, noise_dim, images=16):
    """For ``images`` validation maps: a 3D noise map that differs from a per-image vector only
    inside one class's pixels (the class second in area, so that it is neither the background
    nor a speck); the share of the image change (summed |difference|) that falls inside that
    region, and the region's share of the area (both averaged over the maps)."""
    from spade_tf.data import build_dataset

    b = next(iter(build_dataset(config, "val", batch_size=images, training=False)))
    sem = to_semantics(b["label"], b.get("instance"), config=config)
    labels = b["label"].numpy()
    rng = np.random.default_rng(0)
    inside, area = [], []
    h, w = labels.shape[1:]
    for i in range(images):
        classes, counts = np.unique(labels[i], return_counts=True)
        c = classes[np.argsort(counts)[-2 if len(classes) > 1 else -1]]
        region = labels[i] == c
        base = np.broadcast_to(rng.standard_normal((1, 1, 1, noise_dim)), (1, h, w, noise_dim))
        edited = base.copy()
        edited[0][region] = rng.standard_normal(noise_dim)
        a = generator(sem[i:i + 1], noise=tf.constant(base, tf.float32)).numpy()
        e = generator(sem[i:i + 1], noise=tf.constant(edited, tf.float32)).numpy()
        change = np.abs(a - e).sum(-1)[0]
        inside.append(change[region].sum() / change.sum())
        area.append(region.mean())
    return float(np.mean(inside)), float(np.mean(area))


@pytest.mark.slow
@LIGHT_GROUP
def test_a_noise_map_edited_inside_one_class_changes_the_image_mostly_there(light):
    """The OASIS paper's local editing (Sec. 3.3): re-drawing the 3D noise inside one class's
    region changes the trained model's image mostly inside that region."""
    from spade_tf.ema import inference_generator
    from spade_tf.networks import load_networks

    nets, config = load_networks(light["run"], generator=True, discriminator=False)
    generator, _ = inference_generator(nets, config)
    inside, area = _region_change_fraction(generator, config, config.model.z_dim)
    density = (inside / area) / ((1 - inside) / (1 - area))  # change per pixel, inside / outside
    print(f"share of the change inside the edited region: {inside:.3f} (its area: {area:.3f}; "
          f"per pixel {density:.1f}x the change outside)")
    # seen after 808 steps of oasis_light: 0.61 of the change inside 31% of the area (3.5x)
    assert inside > 0.5 and density >= 2.0, (inside, area, density)


def test_noise_map_from_seeds_changes_the_noise_inside_the_classes_named_only():
    from spade_tf.latents import latent_from_seed, noise_map_from_seeds

    label = np.zeros((8, 6), np.int32)
    label[4:, 2:] = 3
    label[0, 0] = 255
    plain = noise_map_from_seeds(label, 5, {}, 4)
    assert plain.shape == (8, 6, 4) and plain.dtype == np.float32
    np.testing.assert_array_equal(plain, np.broadcast_to(latent_from_seed(5, 4).numpy(), (8, 6, 4)))
    edited = noise_map_from_seeds(label, 5, {3: 9, "255": 2}, 4)
    np.testing.assert_array_equal(edited[label == 3], np.broadcast_to(
        latent_from_seed(9, 4).numpy(), ((label == 3).sum(), 4)))
    np.testing.assert_array_equal(edited[0, 0], latent_from_seed(2, 4).numpy())
    rest = (label != 3) & (label != 255)
    np.testing.assert_array_equal(edited[rest], plain[rest])


def test_the_studio_sends_class_seeds_to_servings_noise_map_signature():
    """With --serving-url, a re-roll (a png row with class_seeds) becomes Serving's noise_map
    request, with the map built from the PNG's ids; other bodies pass unchanged."""
    import base64
    import io
    import json

    from PIL import Image

    from spade_tf.latents import noise_map_from_seeds
    from spade_tf.studio.server import StudioError, noise_map_request

    config = load_config("oasis_light")
    label = np.zeros((64, 64), np.uint8)
    label[32:] = 4
    buf = io.BytesIO()
    Image.fromarray(label, mode="L").save(buf, format="PNG")
    png = {"b64": base64.b64encode(buf.getvalue()).decode()}
    inst = io.BytesIO()
    Image.fromarray(label.astype(np.uint16)).save(inst, format="PNG")
    row = {"label_png": png, "instance_png": {"b64": base64.b64encode(inst.getvalue()).decode()},
           "seed": 7}
    plain = json.dumps({"signature_name": "png", "instances": [row]}).encode()
    assert noise_map_request(plain, config) is plain
    sent = json.loads(noise_map_request(json.dumps({"signature_name": "png", "instances": [
        dict(row, class_seeds={"4": 11})]}).encode(), config))
    assert sent["signature_name"] == "noise_map"
    got = sent["instances"][0]
    np.testing.assert_array_equal(got["label"], label)
    np.testing.assert_array_equal(got["instance"], label)
    np.testing.assert_allclose(got["noise_map"], noise_map_from_seeds(label, 7, {4: 11}, 64))
    for seeds, message in (({"9": 1}, "'9' is not a class id of this model"),
                           ({"4": "x"}, "the seed must be an integer")):
        with pytest.raises(StudioError, match=message):
            noise_map_request(json.dumps({"signature_name": "png", "instances": [
                dict(row, class_seeds=seeds)]}).encode(), config)
    with pytest.raises(StudioError, match="only OASIS models with 3D noise"):
        from spade_tf.studio.server import class_seeds

        class_seeds({"class_seeds": {"1": 2}}, 0, load_config("quickstart"))


def _page_image(page):
    import base64
    import io

    from PIL import Image

    src = page.execute_script("return document.getElementById('output').src;")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


@pytest.mark.slow
@LIGHT_GROUP
def test_studio_rerolls_one_class_and_the_image_changes_mostly_there(light, browser):
    """The page's "re-roll" button (OASIS models): new noise for the current class's pixels
    only, through the studio's server and the exported SavedModel; the image changes mostly
    inside that class, the same image as the noise_map signature draws from the same map."""
    import threading

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from spade_tf.latents import noise_map_from_seeds
    from spade_tf.studio import start_studio
    from spade_tf.studio.browser import drag, open_studio, wait_idle

    server = start_studio(light["saved_model"], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert server.info["regional_noise"]
        open_studio(browser, server.url)
        page = browser
        page.find_element(By.CSS_SELECTOR, "#classes .swatch[data-id='0']").click()  # sky
        page.find_element(By.ID, "clear").click()
        wait_idle(page)
        page.find_element(By.CSS_SELECTOR, "#classes .swatch[data-id='3']").click()  # grass
        ActionChains(page).send_keys("r").perform()
        drag(page, [(0, 36), (63, 63)])  # grass below, sky above
        wait_idle(page)
        reroll = page.find_element(By.ID, "reroll")
        assert reroll.is_displayed() and "grass" in reroll.text
        before = _page_image(page).astype(int)
        labels = np.array(page.execute_script("return window.studio.labelIds();")).reshape(64, 64)
        grass = labels == 3
        assert grass[36:].all() and not grass[:36].any()
        reroll.click()
        wait_idle(page)
        after = _page_image(page).astype(int)
        seeds = page.execute_script("return [window.studio.state.seed, window.studio.state.classSeeds];")
        assert list(seeds[1]) == ["3"] and "1 class re-rolled" in page.find_element(By.ID, "seed").text
    finally:
        server.shutdown()
        server.server_close()
    change = np.abs(after - before).sum(-1)
    inside, area = change[grass].sum() / change.sum(), grass.mean()
    density = (inside / area) / ((1 - inside) / (1 - area))
    print(f"re-roll of grass: {inside:.3f} of the change inside {area:.3f} of the area "
          f"({density:.1f}x per pixel)")
    assert inside > 0.5 and density >= 2.0, (inside, area, density)
    # the page's image is the noise_map signature's for the map the re-roll means
    loaded = tf.saved_model.load(str(light["saved_model"]))
    inst = np.array(page.execute_script("return window.studio.instanceIds();")).reshape(64, 64)
    noise = noise_map_from_seeds(labels, seeds[0], {int(k): v for k, v in seeds[1].items()}, 64)
    want = loaded.signatures["noise_map"](label=tf.constant(labels[None], tf.int32),
                                          instance=tf.constant(inst[None], tf.int32),
                                          noise_map=tf.constant(noise[None]))["image"].numpy()[0]
    assert np.abs(want.astype(int) - after).max() <= 1


def test_no_ema_and_official_options_without_ema(fix_f):
    """OASIS' --no_EMA crashes at the end of its training; here it is a config without the
    average, and a state without netEMA imports without one."""
    from spade_tf.convert import config_from_official, from_official

    opt = dict(fix_f.meta["opt"], no_EMA=True)
    config = config_from_official(opt)
    assert config.train.ema_decay == 0.0 and not config.train.ema_warmup
    nets = from_official({"netG": fix_f.state["netG"]}, config)
    assert nets.ema_generator is None and nets.discriminator is None
    assert nets.inference_generator is nets.generator


def test_moving_average_update_and_warm_up(float64):
    """ema <- d * ema + (1 - d) * g on every float variable (BN statistics and u, v too), with
    d = min(decay, (1 + t) / (10 + t)) when warming up."""
    import keras

    from spade_tf.ema import averaged_variables, update_moving_average, warmed_up_decay
    from spade_tf.networks import build_networks

    config = load_config("tiny", ["train.ema_decay=0.99"])
    keras.utils.set_random_seed(0)
    nets = build_networks(config)
    g, ema = nets.generator, nets.ema_generator
    for a, b in zip(averaged_variables(g), averaged_variables(ema)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # starts as a copy of G
    before = [v.numpy().copy() for v in averaged_variables(ema)]
    for v in averaged_variables(g):
        v.assign(v + 1.0)
    update_moving_average(ema, g, 0.99, step=tf.constant(3, tf.int64))
    d = min(0.99, 4 / 13)  # step 3 of the warm-up
    assert float(warmed_up_decay(0.99, 3)) == pytest.approx(d)
    assert float(warmed_up_decay(0.99, 10**6)) == pytest.approx(0.99)
    names = [v.path for v in averaged_variables(ema)]
    assert any("moving_variance" in n for n in names) and any(n.endswith("/u") for n in names)
    for b0, v, gv in zip(before, averaged_variables(ema), averaged_variables(g)):
        np.testing.assert_allclose(v.numpy(), d * b0 + (1 - d) * gv.numpy(), rtol=1e-6, atol=1e-7)
    assert all(tf.as_dtype(v.dtype).is_floating for v in averaged_variables(g))


def test_studio_gives_an_oasis_model_a_new_look_per_seed(tmp_path):
    """The studio's "new look" for OASIS: its info says the model has a latent, and the png
    signature's seeds give different images (and the same seed the same image)."""
    import base64
    import io
    import json

    import keras
    from PIL import Image

    from spade_tf.networks import build_networks, save_networks
    from spade_tf.studio.server import LocalBackend, StudioError
    from spade_tf.synthesize import load_synthesizer

    config = load_config("oasis_light", ["model.base_filters=4", "model.disc_filters=4",
                                         "model.spade_hidden_filters=8", "model.z_dim=8"])
    keras.utils.set_random_seed(0)
    save_networks(build_networks(config, discriminator=False), config, tmp_path / "ckpt")
    backend = LocalBackend(load_synthesizer(tmp_path / "ckpt"))
    info = backend.info()
    assert info["has_latent"] and not info["use_vae"] and not info["has_style"]
    assert info["family"] == "oasis"
    label = np.zeros((64, 64), np.uint8)
    label[32:] = 3
    buf = io.BytesIO()
    Image.fromarray(label).save(buf, format="PNG")
    png = {"b64": base64.b64encode(buf.getvalue()).decode()}

    def image(seed):
        body = {"signature_name": "png", "instances": [
            {"label_png": png, "instance_png": png, "seed": seed}]}
        status, answer, _ = backend.predict(json.dumps(body).encode())
        assert status == 200, answer
        data = base64.b64decode(answer["predictions"][0]["image_png_bytes"]["b64"])
        return np.asarray(Image.open(io.BytesIO(data))).astype(int)

    a, b = image(1), image(2)
    assert np.abs(a - b).max() > 0 and np.array_equal(a, image(1))
    body = {"signature_name": "png", "instances": [{"label_png": png, "instance_png": png}]}
    with pytest.raises(StudioError, match="send an integer seed"):  # the server answers 400
        backend.predict(json.dumps(body).encode())


@pytest.mark.slow
@LIGHT_GROUP
def test_oasis_evaluates_its_moving_average_or_its_generator(light, tmp_path):
    from spade_tf.evaluation import evaluate

    ema = evaluate(light["run"], tmp_path / "ema", max_images=8, progress=False)
    g = evaluate(light["run"], tmp_path / "g", max_images=8, progress=False, weights="generator")
    assert ema["weights"].startswith("ema_generator") and g["weights"] == "generator"
    assert ema["images"] == g["images"] == 8
    assert (tmp_path / "ema" / "report.html").is_file()
    again = evaluate(light["run"], tmp_path / "again", max_images=8, progress=False)
    from PIL import Image
    a = np.asarray(Image.open(tmp_path / "ema" / "report.png"))
    b = np.asarray(Image.open(tmp_path / "again" / "report.png"))
    assert again["images"] == 8 and np.abs(a.astype(int) - b.astype(int)).max() <= 1  # same noise


def test_cli_imports_oasis_g_d_and_ema_with_its_opt_txt(tmp_path, fix_f):
    """``spade-tf import-official`` with OASIS' opt.txt (its config.py writes the same
    ``name: value`` lines as SPADE's) and the three state dicts; the checkpoint folder then
    loads and its averaged generator is what export and synthesis run."""
    from conftest import run_python
    from spade_tf.networks import load_networks

    for net, name in (("netG", "G"), ("netD", "D"), ("netEMA", "EMA")):
        np.savez(tmp_path / f"best_net_{name}.npz", **fix_f.state[net])
    lines = ["----------------- Options ---------------"]
    lines += [f"{k:>25}: {str(v):<30}" for k, v in fix_f.meta["opt"].items()]
    (tmp_path / "opt.txt").write_text("\n".join(lines + ["----------------- End -------------------"]))
    out = tmp_path / "imported"
    proc = run_python(
        "from spade_tf.cli import main; import sys; sys.exit(main(["
        f"'import-official', '--generator', r'{tmp_path}/best_net_G.npz', "
        f"'--discriminator', r'{tmp_path}/best_net_D.npz', '--ema', r'{tmp_path}/best_net_EMA.npz', "
        f"'--opt-file', r'{tmp_path}/opt.txt', '--out', r'{out}']))")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported ema_generator" in proc.stdout
    nets, config = load_networks(out)
    assert config.model.family is Family.OASIS and nets.ema_generator is not None
    sem = to_semantics(fix_f["in/label"][:, 0], config=config)
    ema = nets.inference_generator(sem, noise=tf.constant(fix_f["in/z"]), training=False)
    assert max_err(ema, nchw_to_nhwc(fix_f["out/fake_ema_eval"])) <= ATOL


@pytest.mark.parametrize("k,hw", [(3, (8, 5)), (3, (3, 3)), (3, (2, 2)), (5, (7, 9)), (1, (4, 4))])
def test_constant_map_conv_equals_the_conv_of_the_broadcast_map(float64, k, hw):
    """``kernels.constant_map_conv`` (perf.broadcast_noise) against the plain conv of the
    full map, values and both gradients, in float64."""
    from spade_tf.kernels.constant_map_conv import constant_map_conv

    rng = np.random.default_rng(k)
    z = tf.constant(rng.standard_normal((2, 6)))
    kernel = tf.constant(rng.standard_normal((k, k, 6, 4)))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([z, kernel])
        fast = constant_map_conv(z, kernel, hw)
        plain = tf.nn.conv2d(tf.broadcast_to(z[:, None, None, :], (2, *hw, 6)), kernel, 1, "SAME")
        w = tf.constant(rng.standard_normal((2, *hw, 4)))
        lf, lp = tf.reduce_sum(fast * w), tf.reduce_sum(plain * w)
    np.testing.assert_allclose(fast.numpy(), plain.numpy(), rtol=0, atol=1e-12)
    for var in (z, kernel):
        np.testing.assert_allclose(tape.gradient(lf, var).numpy(), tape.gradient(lp, var).numpy(),
                                   rtol=0, atol=1e-11)


@pytest.mark.parametrize("form", ["plain", "all_on"])
def test_f_every_perf_form_matches_the_fixture(fix_f, form):
    """The reference's form (one dense conv of cat(noise, one-hot)) and every optimisation
    on (noise vector on a 3x3 map, one-hot by lookups, fused gamma/beta, ...) both give
    fixture F's images, for the noise as a vector and as a map, and for the EMA generator."""
    from spade_tf.perf import ALL_ON, PLAIN, perf_scope

    nets, config = import_fixture(fix_f)
    sem, z, _, _ = _inputs(fix_f, config)
    noise = tf.constant(nchw_to_nhwc(fix_f["in/noise"]))
    perf = PLAIN if form == "plain" else ALL_ON
    for g, key in ((nets.generator, "out/fake_eval"), (nets.ema_generator, "out/fake_ema_eval")):
        with perf_scope(g, perf):
            for given in (z, noise):
                assert max_err(g(sem, noise=given), nchw_to_nhwc(fix_f[key])) <= ATOL, (key, form)
    with perf_scope(nets.generator, perf):
        assert max_err(nets.generator(sem, noise=z, training=True),
                       nchw_to_nhwc(fix_f["out/fake_train"])) <= ATOL


@pytest.mark.slow
def test_oasis_with_clade_exports_its_noise_path_for_serving_and_tflite(tmp_path):
    """The phone model of the family (oasis_clade_light's networks, narrowed): CLADE's tables
    plus the noise's 1x1 conv into beta. The SavedModel's noise signatures and the .tflite's
    noise map agree with Keras; a map that differs inside one region changes the image there."""
    import keras

    from spade_tf.export import TFLiteRunner, export_generator
    from spade_tf.latents import latent_from_seed
    from spade_tf.networks import build_networks

    config = load_config("oasis_clade_light", ["model.base_filters=4", "model.z_dim=8",
                                               f"data.root={tmp_path / 'absent'}",
                                               "data.dataset=custom"])
    keras.utils.set_random_seed(2)
    nets = build_networks(config, discriminator=False, ema=False)
    rng = np.random.default_rng(5)
    for blk in nets.generator.blocks:  # wider tables and a noise path that matters
        for norm in (blk.norm_0, blk.norm_1):
            norm.gamma_table.assign(rng.uniform(0.5, 2.0, norm.gamma_table.shape).astype(np.float32))
            norm.noise_conv.kernel.assign(0.5 * rng.standard_normal(norm.noise_conv.kernel.shape)
                                          .astype(np.float32))
    res = export_generator((nets, config), tmp_path / "m", tflite=("fp32",),
                           progress=lambda m: None)
    assert res.report["tflite"]["fp32"]["max_abs_levels_vs_keras"] <= 1
    assert res.report["weights"].startswith("generator")
    label = np.zeros((1, 64, 64), np.int32)
    label[0, 32:] = 3
    label[0, 40:, 10:30] = 6
    z = latent_from_seed(4, 8)[None]
    keras_img = nets.generator(to_semantics(label, label, config=config), noise=z).numpy()
    want = np.clip(np.round(keras_img * 127.5 + 127.5), 0, 255)
    sigs = tf.saved_model.load(str(res.version_dir)).signatures
    got = sigs["seed"](label=tf.constant(label), instance=tf.constant(label),
                       seed=tf.constant([4], tf.int64))["image"].numpy()
    assert np.abs(got.astype(int) - want).max() <= 1
    noise_map = np.broadcast_to(z.numpy()[:, None, None, :], (1, 64, 64, 8)).copy()
    tfl = TFLiteRunner(res.tflite["fp32"])(label=label, instance=label, noise=noise_map)
    assert np.abs(tfl.astype(int) - want).max() <= 1
    edited = noise_map.copy()
    region = label[0] == 6
    edited[0][region] = rng.standard_normal(8)
    changed = np.abs(TFLiteRunner(res.tflite["fp32"])(label=label, instance=label, noise=edited)
                     .astype(int) - tfl.astype(int)).sum(-1)[0]
    assert changed[region].sum() > 0.5 * changed.sum()


def test_bad_oasis_depth_names_num_res_blocks():
    """A depth outside OASIS' 2..6 is refused naming num_res_blocks (not the latent size that
    it would otherwise make zero)."""
    with pytest.raises(ValueError, match=r"model.num_res_blocks=9 must be 2..6"):
        load_config("oasis_light", ["model.num_res_blocks=9"])


@pytest.mark.parametrize("preset", ["oasis_light", "quickstart"])
def test_the_discriminator_can_have_its_own_init_gain(preset):
    """model.disc_init_gain sets D's xavier gain alone (the light OASIS D needs 1.0, G keeps the
    reference's 0.02); unset, D shares model.init_gain as in the references."""
    from spade_tf.networks import build_networks

    def kernel_std(layers):
        return float(np.mean([np.std(v.numpy()) for v in layers.trainable_variables
                              if "kernel" in v.path and int(np.prod(v.shape)) > 64]))

    small = ["model.base_filters=4", "model.disc_filters=4", "model.init_gain=0.02"]
    low = build_networks(load_config(preset, small + ["model.disc_init_gain=0.02"]), seed=0)
    own = build_networks(load_config(preset, small + ["model.disc_init_gain=1.0"]), seed=0)
    # D's kernels grow by the gain ratio (xavier: std proportional to gain); G's stay as they were
    assert kernel_std(own.discriminator) / kernel_std(low.discriminator) == pytest.approx(50, rel=0.05)
    assert kernel_std(own.generator) == pytest.approx(kernel_std(low.generator), rel=0.05)
    # unset (every preset but the light OASIS ones), D shares G's gain
    unset = load_config("quickstart", ["model.init_gain=0.3"]).model
    assert unset.disc_init_gain is None and unset.discriminator_init_gain == 0.3
    assert load_config("oasis_light").model.discriminator_init_gain == 1.0
    with pytest.raises(ValueError, match=r"model.disc_init_gain=0.0 must be > 0"):
        load_config(preset, ["model.disc_init_gain=0"])
