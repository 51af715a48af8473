"""``to_semantics``: one-hot, dontcare, instance edges, and clear errors on bad ids."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from spade_tf.config import load_config
from spade_tf.semantics import instance_edges, to_semantics

TINY = load_config("tiny")  # 4 classes + dontcare + instance edges = 6 channels
NO_DC = load_config("tiny", ["model.contain_dontcare=false", "model.use_instance=false"])


def test_one_hot_and_dontcare_channel():
    label = np.array([[[0, 1], [3, 255]]], np.int32)
    inst = np.zeros_like(label)
    sem = to_semantics(label, inst, config=TINY).numpy()
    assert sem.shape == (1, 2, 2, 6)
    assert sem[0, 0, 0].tolist() == [1, 0, 0, 0, 0, 0]
    assert sem[0, 1, 0].tolist() == [0, 0, 0, 1, 0, 0]
    assert sem[0, 1, 1].tolist() == [0, 0, 0, 0, 1, 0]  # 255 -> channel num_classes
    # id num_classes is the dontcare channel too (the reference's loader writes that).
    assert to_semantics([[[4]]], [[[0]]], config=TINY).numpy()[0, 0, 0, 4] == 1


def test_instance_edges_hand_checked():
    inst = np.array([[[1, 1, 2, 2],
                      [1, 1, 2, 2],
                      [3, 3, 3, 3]]], np.int32)
    expected = np.array([[[0, 1, 1, 0],
                          [1, 1, 1, 1],
                          [1, 1, 1, 1]]], np.float32)
    np.testing.assert_array_equal(instance_edges(inst).numpy(), expected)
    sem = to_semantics(np.zeros_like(inst), inst, config=TINY).numpy()
    np.testing.assert_array_equal(sem[..., -1], expected)


def test_instance_edges_keep_16_bit_ids():
    inst = np.array([[[300, 300, 65535]]], np.int32)
    assert instance_edges(inst).numpy().tolist() == [[[0, 1, 1]]]


@pytest.mark.parametrize("bad", [4 + 2, 17, -1])
def test_out_of_range_id_is_an_error_naming_value_and_range(bad):
    label = np.array([[[0, 1], [2, bad]]], np.int32)
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        to_semantics(label, np.zeros_like(label), config=TINY)
    assert (f"label id out of range: found {bad}; allowed ids are [0, 4] (4 = dontcare) or 255 "
            f"(dontcare)") in str(e.value)


def test_255_without_dontcare_is_an_error():
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"allowed ids are \[0, 4\)"):
        to_semantics(np.array([[[255]]]), config=NO_DC)


def test_bad_id_is_an_error_inside_a_graph_too():
    fn = tf.function(lambda lab: to_semantics(lab, config=NO_DC),
                     input_signature=[tf.TensorSpec((None, None, None), tf.int32)])
    assert fn(tf.constant([[[3]]])).shape == (1, 1, 1, 4)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"label id out of range: found\] \[9\].*allowed ids are \[0, 4\)"):
        fn(tf.constant([[[0, 9]]]))


def test_float_labels_and_wrong_inputs_are_rejected():
    with pytest.raises(TypeError, match="integer map"):
        to_semantics(np.zeros((1, 2, 2), np.float32), config=NO_DC)
    with pytest.raises(ValueError, match="pass instance="):
        to_semantics(np.zeros((1, 2, 2), np.int32), config=TINY)
    with pytest.raises(ValueError, match="does not use instance maps"):
        to_semantics(np.zeros((1, 2, 2), np.int32), np.zeros((1, 2, 2), np.int32), config=NO_DC)
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        to_semantics(np.zeros((2, 2), np.int32), config=NO_DC)
    with pytest.raises(tf.errors.InvalidArgumentError, match="same"):
        to_semantics(np.zeros((1, 2, 2), np.int32), np.zeros((1, 2, 3), np.int32), config=TINY)


@pytest.mark.parametrize("family,dontcare", [("spade", False), ("spade", True), ("oasis", False),
                                             ("oasis", True)])
def test_the_gpu_graphs_one_hot_from_float_ops_equals_tf_one_hot(family, dontcare):
    """``onehot_form="arithmetic"`` (the TFLite GPU graph: relu(1 - |label - id|), no ONE_HOT,
    EQUAL or CAST inside) gives tf.one_hot's map, and the same instance edges, for every
    layout of ids: SPADE and OASIS, with and without the dontcare id 255."""
    overrides = ["model.use_instance=true", f"model.contain_dontcare={str(dontcare).lower()}"]
    if family == "oasis":
        overrides.append("model.generator=oasis")
    config = load_config("tiny", overrides)
    m = config.model
    ids = list(range(m.num_classes)) + ([255] if dontcare or family == "oasis" else [])
    if dontcare and family == "spade":
        ids.append(m.num_classes)  # the loader's own dontcare id
    rng = np.random.default_rng(0)
    label = rng.choice(ids, (2, 12, 10)).astype(np.int32)
    inst = rng.integers(0, 5, (2, 12, 10)).astype(np.int32)
    want = to_semantics(label, inst, config=config).numpy()
    for dtype in (tf.float32, tf.float16):
        got = to_semantics(label, inst, config=config, validate=False, dtype=dtype,
                           onehot_form="arithmetic").numpy()
        np.testing.assert_array_equal(got.astype(np.float32), want)
    with pytest.raises(ValueError, match="onehot_form='dense'"):
        to_semantics(label, inst, config=config, onehot_form="dense")
