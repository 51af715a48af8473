"""Data: the official layouts, preprocessing, the pipeline, and bad data (one test per case)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import SHARED
from spade_tf.config import load_config
from spade_tf.data import DataError, build_dataset
from spade_tf.data.io import read_index_map, read_photo
from spade_tf.semantics import to_semantics

COCO = SHARED / "data" / "coco_stuff_sample"


def coco_config(*overrides):
    if not COCO.is_dir():
        pytest.skip(f"COCO-Stuff sample {COCO} is absent (set SPADE_TF_SHARED)")
    return load_config("coco_stuff", [f"data.root={COCO}", "model.crop_size=64",
                                      "data.load_size=72", "train.batch_size=4", *overrides])


def first(ds):
    return next(iter(ds))


def _png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(path)
    return path


def _photo(rng, h, w):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- COCO sample


def test_coco_batches_have_the_right_shapes_and_ranges():
    config = coco_config()
    batches = list(build_dataset(config, "train"))
    assert len(batches) == 13 // 4  # drop_remainder in training
    b = batches[0]
    assert set(b) == {"label", "instance", "image"}
    assert b["label"].dtype == tf.int32 and b["label"].shape == (4, 64, 64)
    assert b["instance"].dtype == tf.int32 and b["instance"].shape == (4, 64, 64)
    assert b["image"].dtype == tf.float32 and b["image"].shape == (4, 64, 64, 3)
    img = b["image"].numpy()
    assert img.min() >= -1.0 and img.max() <= 1.0 and img.std() > 0.1
    ids = np.unique(np.concatenate([x["label"].numpy().ravel() for x in batches]))
    assert set(ids) <= set(range(182)) | {255}


def test_coco_dontcare_255_maps_to_channel_182():
    config = coco_config("data.preprocess=crop", "model.crop_size=128")
    val = list(build_dataset(config, "val", batch_size=1))
    labels = np.concatenate([b["label"].numpy() for b in val])
    assert (labels == 255).any(), "the sample has unlabeled pixels"
    sem = to_semantics(labels, np.zeros_like(labels), config=config).numpy()
    assert sem.shape[-1] == 184
    np.testing.assert_array_equal(sem[..., 182], (labels == 255).astype(np.float32))
    np.testing.assert_array_equal(sem[..., :182].sum(-1), (labels != 255).astype(np.float32))


def test_coco_instance_edges_on_a_hand_checked_crop():
    # 'crop' without training: a centred crop, no resize, so the raw PNG crop is known.
    config = coco_config("data.preprocess=crop", "model.crop_size=96")
    b = first(build_dataset(config, "val", batch_size=1))
    stem = sorted(p.stem for p in (COCO / "val_label").glob("*.png"))[0]
    raw = np.array(Image.open(COCO / "val_inst" / f"{stem}.png")).astype(np.int32)
    h, w = raw.shape
    y0, x0 = (h - 96) // 2, (w - 96) // 2
    crop = raw[y0:y0 + 96, x0:x0 + 96]
    np.testing.assert_array_equal(b["instance"][0].numpy(), crop)
    expected = np.zeros((96, 96), np.float32)  # plain loops: differs from any 4-neighbour
    for y in range(96):
        for x in range(96):
            for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < 96 and 0 <= xx < 96 and crop[yy, xx] != crop[y, x]:
                    expected[y, x] = 1
    sem = to_semantics(b["label"], b["instance"], config=config).numpy()
    assert expected.sum() > 50  # the crop really has object boundaries
    np.testing.assert_array_equal(sem[0, ..., -1], expected)


def test_records_and_tfds_yield_the_folder_examples(tmp_path, monkeypatch):
    from spade_tf.data.records import prepare_data

    config = coco_config("train.batch_size=1")

    def examples(ds):
        return sorted((float(b["image"].numpy().sum()), int(b["label"].numpy().sum()),
                       int(b["instance"].numpy().sum())) for b in ds)

    folders = examples(build_dataset(config, "val"))
    prepare_data(config, "val", tmp_path / "rec", num_shards=3, progress=False)
    assert len(list((tmp_path / "rec" / "val").glob("*.tfrecord"))) == 3
    assert examples(build_dataset(config, "val", source=str(tmp_path / "rec"))) == folders
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    got = examples(build_dataset(config, "val", source="tfds:spade_folders/coco_stuff"))
    assert got == folders


# ----------------------------------------------------------------------------- other layouts


def test_ade20k_layout(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "ADEChallengeData2016"
    for split, phase in (("train", "training"), ("val", "validation")):
        for i in range(3):
            stem = f"ADE_{phase}_{i:08d}"
            _png(root / "images" / phase / f"{stem}.jpg", _photo(rng, 40, 50))
            _png(root / "annotations" / phase / f"{stem}.png",
                 rng.integers(0, 151, size=(40, 50)).astype(np.uint8))
    config = load_config("ade20k", [f"data.root={root}", "model.crop_size=32",
                                    "data.preprocess=crop", "train.batch_size=3"])
    b = first(build_dataset(config, "val"))
    assert b["label"].shape == (3, 32, 32) and "instance" not in b
    assert b["label"].numpy().max() <= 150
    assert len(list(build_dataset(config, "train"))) == 1


def test_cityscapes_16_bit_instance_ids_survive(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "cityscapes"
    inst = np.full((64, 128), 26000, np.uint16)
    inst[:, 20:40] = 26001
    inst[10:20, 45:60] = 300
    inst[0, 0] = 65535
    for split in ("train", "val"):
        stem = "aachen_000000_000019"
        _png(root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png", _photo(rng, 64, 128))
        _png(root / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png",
             rng.integers(0, 34, size=(64, 128)).astype(np.uint8))
        Image.fromarray(inst).save(root / "gtFine" / split / "aachen" /
                                   f"{stem}_gtFine_instanceIds.png")
    assert read_index_map(root / "gtFine" / "val" / "aachen" /
                          "aachen_000000_000019_gtFine_instanceIds.png").max() == 65535
    config = load_config("cityscapes", [f"data.root={root}", "model.crop_size=128",
                                        "train.batch_size=1"])
    b = first(build_dataset(config, "val"))  # 'fixed': resized (nearest) to 64 x 128, a no-op
    assert b["instance"].shape == (1, 64, 128)
    np.testing.assert_array_equal(b["instance"][0].numpy(), inst.astype(np.int32))


def test_custom_layout_with_split_placeholder(tmp_path):
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for i in range(2):
            _png(tmp_path / f"{split}_photos" / f"{i}.jpg", _photo(rng, 24, 24))
            _png(tmp_path / f"{split}_labels" / f"{i}.png", rng.integers(0, 5, (24, 24)).astype(np.uint8))
    config = load_config("custom", [f"data.root={tmp_path}", "data.image_dir={split}_photos",
                                    "data.label_dir={split}_labels", "model.num_classes=5",
                                    "model.crop_size=32", "data.load_size=32",
                                    "train.batch_size=2"])
    b = first(build_dataset(config, "train"))
    assert b["image"].shape == (2, 32, 32, 3)


def test_unpaired_files_are_listed(tmp_path):
    rng = np.random.default_rng(3)
    _png(tmp_path / "img" / "a.jpg", _photo(rng, 8, 8))
    _png(tmp_path / "img" / "b.jpg", _photo(rng, 8, 8))
    _png(tmp_path / "lab" / "a.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "lab" / "c.png", np.zeros((8, 8), np.uint8))
    config = load_config("custom", [f"data.root={tmp_path}", "data.image_dir=img",
                                    "data.label_dir=lab"])
    with pytest.raises(DataError, match=r"photo\(s\) without a label.*b\.jpg[\s\S]*label\(s\) "
                                        r"without a photo.*c\.png"):
        build_dataset(config, "train")


# ----------------------------------------------------------------------------- bad data


def _one_pair(tmp_path, photo, label, label_mode=None, **kwargs):
    _png(tmp_path / "img" / "x.png", photo)
    _png(tmp_path / "lab" / "x.png", label, label_mode)
    over = [f"data.root={tmp_path}", "data.image_dir=img", "data.label_dir=lab",
            "model.num_classes=5", "model.crop_size=32", "data.preprocess=crop", "train.batch_size=1"]
    over += [f"{k.replace('__', '.')}={v}" for k, v in kwargs.items()]
    return load_config("custom", over)


def _iterate(config, **kwargs):
    return list(build_dataset(config, "train", **kwargs))


def test_bad_label_id_names_file_value_and_range(tmp_path):
    label = np.zeros((16, 16), np.uint8)
    label[3, 3] = 7
    config = _one_pair(tmp_path, _photo(np.random.default_rng(0), 16, 16), label)
    with pytest.raises(tf.errors.OpError, match=r"lab/x\.png: label id\(s\) \[7\] out of range; "
                                                r"allowed ids are \[0, 5\)"):
        _iterate(config)


def test_negative_label_id_is_an_error():
    # PNGs cannot hold negative ids, but arrays from other sources can: the same rule applies.
    from spade_tf.data.source import check_labels

    label = np.zeros((4, 4), np.int32)
    label[0, 0] = -3
    with pytest.raises(DataError, match=r"label\.png: label id\(s\) \[-3\] out of range"):
        check_labels(label, load_config("custom", ["model.num_classes=5"]), "label.png")


def test_photo_and_label_of_different_sizes(tmp_path):
    config = _one_pair(tmp_path, _photo(np.random.default_rng(0), 16, 20), np.zeros((16, 16), np.uint8))
    with pytest.raises(tf.errors.OpError, match=r"size mismatch: photo .*img/x\.png is 20x16, label "
                                                r".*lab/x\.png is 16x16"):
        _iterate(config)


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_corrupt_or_truncated_files_name_the_file_and_can_be_skipped(tmp_path, kind, capsys):
    rng = np.random.default_rng(4)
    for i in range(3):
        Image.fromarray(_photo(rng, 16, 16)).save(tmp_path / f"p{i}.{'jpg' if kind == 'jpeg' else 'png'}")
        _png(tmp_path / "lab" / f"p{i}.png", np.zeros((16, 16), np.uint8))
    bad = tmp_path / f"p1.{'jpg' if kind == 'jpeg' else 'png'}"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])  # truncated
    config = load_config("custom", [f"data.root={tmp_path}", "data.image_dir=.",
                                    "data.label_dir=lab", "model.num_classes=5",
                                    "model.crop_size=32", "train.batch_size=1"])
    with pytest.raises(tf.errors.OpError, match=rf"{bad.name}: (corrupt or truncated|cannot read)"):
        _iterate(config)
    got = _iterate(config, skip_bad=True)
    assert len(got) == 2
    assert "data: skipped 1 bad example(s)" in capsys.readouterr().out


def test_grayscale_rgba_palette_photos_become_rgb_and_palette_labels_stay_indices(tmp_path):
    rng = np.random.default_rng(5)
    gray = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L")
    rgba = Image.fromarray(rng.integers(0, 256, (8, 8, 4), dtype=np.uint8), "RGBA")
    pal = Image.fromarray(_photo(rng, 8, 8)).convert("P")
    for name, img in (("g.png", gray), ("a.png", rgba), ("p.png", pal)):
        img.save(tmp_path / name)
        out = read_photo(tmp_path / name)
        assert out.mode == "RGB" and out.size == (8, 8)
    np.testing.assert_array_equal(np.asarray(read_photo(tmp_path / "g.png"))[..., 1], np.asarray(gray))
    # A palette label: indices 0..4 whose palette colours are arbitrary RGB.
    idx = rng.integers(0, 5, (8, 8)).astype(np.uint8)
    plabel = Image.fromarray(idx, "P")
    plabel.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9, 200, 100, 50] + [0] * 753)
    plabel.save(tmp_path / "plabel.png")
    assert Image.open(tmp_path / "plabel.png").mode == "P"
    np.testing.assert_array_equal(read_index_map(tmp_path / "plabel.png"), idx)


def test_16_bit_label_and_instance_values_are_kept(tmp_path):
    values = np.array([[0, 1, 300, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode.startswith("I")
    np.testing.assert_array_equal(read_index_map(tmp_path / "m.png"), values.astype(np.int32))


def test_oversized_image_is_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:60])  # header only: a full decode would fail differently
    with pytest.raises(DataError, match=r"big\.png: image is 400x300 = 120,000 pixels, more than "
                                        r"the limit data\.max_image_pixels=1,000"):
        read_photo(path, max_pixels=1000)


def test_empty_or_missing_dataset_folder_fails_before_anything_is_built(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    config = load_config("custom", [f"data.root={tmp_path}", "data.image_dir=img",
                                    "data.label_dir=lab"])
    with pytest.raises(DataError, match="the train split is empty"):
        build_dataset(config, "train")  # raised at build time, not when iterating
    config = load_config("ade20k", [f"data.root={tmp_path / 'nope'}"])
    with pytest.raises(DataError, match=r"dataset folder not found: .*nope/images/training"):
        build_dataset(config, "train")


@pytest.mark.parametrize("entry", ["../outside.png", "/etc/passwd", "a/../../b.png"])
def test_file_lists_may_not_escape_the_root(tmp_path, entry):
    _png(tmp_path / "img" / "a.jpg", _photo(np.random.default_rng(0), 8, 8))
    _png(tmp_path / "lab" / "a.png", np.zeros((8, 8), np.uint8))
    listing = tmp_path / "list.txt"
    listing.write_text(f"a.png\n{entry}\n")
    config = load_config("custom", [f"data.root={tmp_path}", "data.image_dir=img",
                                    "data.label_dir=lab", f"data.file_list={listing}"])
    with pytest.raises(DataError, match=r"list\.txt, line 2: .* escapes the dataset root"):
        build_dataset(config, "train")


def test_file_list_selects_examples(tmp_path):
    rng = np.random.default_rng(0)
    for s in ("a", "b", "c"):
        _png(tmp_path / "img" / f"{s}.jpg", _photo(rng, 8, 8))
        _png(tmp_path / "lab" / f"{s}.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "list.txt").write_text("# two of three\nc.png\na.png\n")
    config = load_config("custom", [f"data.root={tmp_path}", "data.image_dir=img",
                                    "data.label_dir=lab", f"data.file_list={tmp_path / 'list.txt'}",
                                    "model.crop_size=32", "data.load_size=32", "train.batch_size=1"])
    assert len(list(build_dataset(config, "val"))) == 2


# ----------------------------------------------------------------------------- synthscapes


SYNTH = load_config("synthscapes", ["model.crop_size=64", "data.load_size=64",
                                    "data.synth_train_size=16", "train.batch_size=4"])


def test_synthscapes_is_deterministic_and_covers_every_class():
    from spade_tf.data import synthscapes as S

    a = S.render(S.example_seed("train", 3), 96)
    b = S.render(S.example_seed("train", 3), 96)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    seen = set()
    for i in range(40):
        photo, label, inst = S.render(S.example_seed("train", i), 64)
        seen |= set(np.unique(label).tolist())
        # Instances only on countable things (buildings, trees), with their own ids.
        assert set(np.unique(label[inst > 0]).tolist()) <= {S.BUILDING, S.TREE}
        assert photo.dtype == np.uint8 and photo.shape == (64, 64, 3)
    assert seen == set(range(S.NUM_CLASSES)) and S.NUM_CLASSES >= 8


def test_synthscapes_style_and_reflection_reach_across_regions():
    from spade_tf.data import synthscapes as S

    # The same class varies in colour between images (per-image style) ...
    grass_means = []
    for i in range(30):
        photo, label, _ = S.render(S.example_seed("val", i), 64)
        if (label == S.GRASS).sum() > 100:
            grass_means.append(photo[label == S.GRASS].mean(0))
    assert np.std(np.array(grass_means), axis=0).max() > 15
    # ... and water takes colour from what stands above the horizon (its reflection).
    corr = []
    for i in range(60):
        photo, label, _ = S.render(S.example_seed("train", i), 128)
        water = label == S.WATER
        if water.sum() < 300:
            continue
        rows = np.nonzero(water.any(1))[0]
        top = rows.min()
        mirror = np.clip(2 * top - rows, 0, 127)
        above = photo[mirror].astype(float).mean((1, 2))
        below = np.array([photo[r][water[r]].astype(float).mean() for r in rows])
        if above.std() > 1 and below.std() > 1:
            corr.append(np.corrcoef(above, below)[0, 1])
    assert len(corr) >= 5 and np.median(corr) > 0.3


def test_pipeline_is_deterministic_resumable_and_shards():
    a = [b["image"].numpy() for b in build_dataset(SYNTH, "train", repeat=True).take(6)]
    b = [b["image"].numpy() for b in build_dataset(SYNTH, "train", repeat=True).take(6)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[4])  # epoch 2 is a different permutation / crops
    # Resume at example 8 of the stream = batch 2 onwards.
    c = [b["image"].numpy() for b in build_dataset(SYNTH, "train", repeat=True, skip_examples=8).take(2)]
    np.testing.assert_array_equal(c[0], a[2])
    np.testing.assert_array_equal(c[1], a[3])
    # Two input pipelines read disjoint halves of the same stream.
    full = build_dataset(SYNTH, "train", batch_size=1)
    keys = [float(x["image"].numpy().sum()) for x in full]
    halves = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                         num_replicas_in_sync=2)
        halves.append([float(x["image"].numpy().sum()) for x in
                       build_dataset(SYNTH, "train", batch_size=2, input_context=ctx)])
    assert sorted(halves[0] + halves[1]) == sorted(keys) and not set(halves[0]) & set(halves[1])


def test_synthscapes_needs_its_class_count():
    with pytest.raises(ValueError, match="num_classes=9"):
        build_dataset(load_config("synthscapes", ["model.num_classes=4"]), "train")


# ----------------------------------------------------------------------------- previews


def test_class_names_and_palettes():
    from spade_tf.data.labels import class_names, colorize, palette

    assert class_names("ade20k", 151)[:3] == ["other (unlabeled)", "wall", "building"]
    assert class_names("coco_stuff", 182)[0] == "person"
    assert class_names("cityscapes", 35)[7] == "road"
    assert tuple(palette("cityscapes", 35)[7]) == (128, 64, 128)  # cityscapesscripts colour
    for preset, n in (("ade20k", 150), ("coco_stuff", 182), ("facades", 13), ("custom", 13),
                      ("synthscapes", 9)):
        colors = palette(preset, n)
        assert len({tuple(c) for c in colors[:n]}) == n  # distinct
        assert tuple(colors[n]) == (0, 0, 0) and (0, 0, 0) not in {tuple(c) for c in colors[:n]}
    config = load_config("coco_stuff")
    rgb = colorize(np.array([[0, 255, 999]]), config)
    assert tuple(rgb[0, 1]) == (0, 0, 0) and tuple(rgb[0, 2]) == (255, 0, 255)


def test_cli_preview_synthscapes_and_prepare_data(tmp_path):
    from spade_tf.cli import main

    assert main(["synthscapes", "--out", str(tmp_path / "s"), "--train", "3", "--val", "2",
                 "--size", "32"]) == 0
    over = ["--set", "data.dataset=custom", "--set", f"data.root={tmp_path / 's'}",
            "--set", "data.image_dir={split}_img", "--set", "data.label_dir={split}_label",
            "--set", "data.instance_dir={split}_inst", "--set", "model.crop_size=32",
            "--set", "data.load_size=32"]
    assert main(["preview", "--config", "synthscapes", *over, "--out", str(tmp_path / "p.png"),
                 "--count", "2"]) == 0
    assert Image.open(tmp_path / "p.png").size == (2 * (64 + 4) - 4, 32)  # 2 cells, 4 px gap
    assert main(["prepare-data", "--config", "synthscapes", *over, "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "train" / "meta.json").is_file()
    assert main(["prepare-data", "--config", "synthscapes", *over, "--out", str(tmp_path / "r")]) == 2


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("mode,size,expected", [
    # (preprocess, input (w, h), output (h, w)) with load_size 48 and crop 32, as base_dataset.py
    ("resize_and_crop", (100, 60), (32, 32)),
    ("crop", (100, 60), (32, 32)),
    ("scale_width_and_crop", (100, 60), (32, 32)),
    ("scale_shortside_and_crop", (100, 60), (32, 32)),
    ("scale_width", (100, 60), (28, 48)),  # h = int(48 * 60 / 100)
    ("scale_shortside", (100, 60), (48, 80)),  # short side 48, long int(48 * 100 / 60)
    ("fixed", (100, 60), (32, 32)),
    ("none", (100, 60), (64, 96)),  # rounded to multiples of 32
])
def test_preprocess_modes_give_the_reference_sizes(mode, size, expected):
    from spade_tf.data.preprocess import preprocess_example

    config = load_config("custom", [f"data.preprocess={mode}", "data.load_size=48",
                                    "model.crop_size=32"])
    w, h = size
    photo = Image.fromarray(_photo(np.random.default_rng(0), h, w))
    label = np.zeros((h, w), np.int32)
    p, lab, inst = preprocess_example(photo, label, label, config, np.random.default_rng(1), True)
    assert p.shape[:2] == lab.shape == inst.shape == expected


def test_crop_and_flip_are_shared_by_photo_label_and_instance():
    from spade_tf.data.preprocess import preprocess_example

    config = load_config("custom", ["data.preprocess=crop", "model.crop_size=32"])
    h, w = 48, 64
    ids = np.arange(w)[None, :] * 3 + np.arange(h)[:, None] // 16  # < 256, increasing along x
    photo = Image.fromarray(np.stack([ids, ids, ids], -1).astype(np.uint8))
    flips = set()
    for seed in range(12):
        p, lab, inst = preprocess_example(photo, ids.astype(np.int32), ids.astype(np.int32) * 7,
                                          config, np.random.default_rng(seed), True)
        np.testing.assert_array_equal(p[..., 0].astype(np.int32), lab)  # same crop and flip
        np.testing.assert_array_equal(inst, lab * 7)
        flips.add(bool(lab[0, 1] < lab[0, 0]))
    assert flips == {True, False}  # both flipped and unflipped examples occurred
