"""The network input: integer label (and instance) maps to the float semantic map (spec §9)."""

from __future__ import annotations

import tensorflow as tf

from spade_tf.config import Config, Family, ModelConfig
from spade_tf.kernels.delegate_forms import instance_edges_arithmetic, onehot_arithmetic

DONTCARE_ID = 255  # the reference's "unlabeled" id, remapped to channel num_classes


def _model_config(config) -> ModelConfig:
    if isinstance(config, Config):
        return config.model
    if isinstance(config, ModelConfig):
        return config
    raise TypeError(f"config must be a spade_tf Config or ModelConfig, got {type(config).__name__}")


def instance_edges(instance):
    """The reference's ``get_edges``: 1 where the id differs from a 4-neighbour, else 0.

    Both pixels on each side of an id change are marked; borders only compare inward.

    Args:
        instance: integer [N, H, W] instance-id map.

    Returns:
        float32 [N, H, W] edge map.
    """
    t = tf.convert_to_tensor(instance)
    dx = tf.not_equal(t[:, :, 1:], t[:, :, :-1])  # [N, H, W-1]
    dy = tf.not_equal(t[:, 1:, :], t[:, :-1, :])  # [N, H-1, W]
    edge = tf.zeros_like(t, dtype=tf.bool)
    edge = edge | tf.pad(dx, [[0, 0], [0, 0], [1, 0]]) | tf.pad(dx, [[0, 0], [0, 0], [0, 1]])
    edge = edge | tf.pad(dy, [[0, 0], [1, 0], [0, 0]]) | tf.pad(dy, [[0, 0], [0, 1], [0, 0]])
    return tf.cast(edge, tf.float32)


def _check_integer(x, name):
    if not (x.dtype.is_integer or x.dtype == tf.uint8):
        raise TypeError(f"{name} must be an integer map, got dtype {x.dtype.name}: class ids are "
                        f"integers, and a float map would be truncated silently")


def _id_range(model: ModelConfig) -> int:
    """The ids 0..k-1 that map to one-hot channels (255 aside): with ``contain_dontcare`` the
    dontcare id itself (SPADE: ``num_classes``, as its loader rewrites 255; OASIS: 0) too."""
    return model.num_classes + int(model.contain_dontcare)


def label_channel_index(label, model: ModelConfig):
    """Each id's one-hot channel (ids already validated).

    SPADE: id c -> channel c, and 255 -> ``num_classes`` (the dontcare channel) when
    ``contain_dontcare``. OASIS (boschresearch/OASIS' layout: dontcare is channel 0, the class
    balancing gives it weight 0): with ``contain_dontcare`` the data's own id 0 is its dontcare
    (ADE20K's "other", Cityscapes' "unlabeled"), so id c -> channel c; without it every id is
    a class and moves up by one (OASIS' COCO-Stuff loader adds 1). 255 -> channel 0 in both."""
    if model.family is Family.OASIS:
        index = label if model.contain_dontcare else label + 1
        return tf.where(tf.equal(label, DONTCARE_ID), tf.zeros_like(label), index)
    if model.contain_dontcare:
        return tf.where(tf.equal(label, DONTCARE_ID), model.num_classes, label)
    return label


def _channel_ids(model: ModelConfig):
    """``label_channel_index`` as data: the id each channel stands for, and the one extra
    ``(channel, id)`` pair (the dontcare id 255 beside its channel's own id), or None."""
    n = model.num_label_channels
    if model.family is Family.OASIS:
        if model.contain_dontcare:  # id c -> channel c, and 255 -> 0 too
            return list(range(n)), (0, DONTCARE_ID)
        return [DONTCARE_ID] + list(range(n - 1)), None  # id c -> channel c + 1, 255 -> 0
    if model.contain_dontcare:  # id c -> channel c; 255 -> num_classes too
        return list(range(n)), (model.num_classes, DONTCARE_ID)
    return list(range(n)), None


def invalid_label_ids(label, model: ModelConfig):
    """The distinct ids of a numpy label map that ``to_semantics`` would reject (sorted)."""
    import numpy as np

    ids = np.unique(np.asarray(label))
    ok = (ids >= 0) & (ids < _id_range(model))
    if model.contain_dontcare or model.family is Family.OASIS:
        ok |= ids == DONTCARE_ID
    return ids[~ok]


def validate_labels(label, model: ModelConfig):
    """Raises ``InvalidArgumentError`` naming the first bad id and the allowed range.

    Eagerly it raises at once and returns None; in a graph it returns the assert op to depend on.

    ``tf.one_hot`` turns an out-of-range or negative id into an all-zero vector without a word;
    the reference crashes with a CUDA scatter error. This check works eagerly and inside graphs.
    """
    n = model.num_classes
    valid = (label >= 0) & (label < n)
    allowed = f"[0, {n})"
    if model.family is Family.OASIS:
        k = _id_range(model)
        valid = ((label >= 0) & (label < k)) | tf.equal(label, DONTCARE_ID)
        allowed = (f"[0, {k}) or {DONTCARE_ID} (dontcare; OASIS layout, "
                   f"{'id 0 = dontcare' if model.contain_dontcare else 'ids shifted by one'})")
    elif model.contain_dontcare:
        # The reference's loader rewrites 255 to num_classes before the network, so the
        # dontcare channel is reachable both ways.
        valid = valid | tf.equal(label, DONTCARE_ID) | tf.equal(label, n)
        allowed = f"[0, {n}] ({n} = dontcare) or {DONTCARE_ID} (dontcare)"
    all_valid = tf.reduce_all(valid)
    detail = f"allowed ids are {allowed} (num_classes={n}, contain_dontcare={model.contain_dontcare})"
    if tf.executing_eagerly():
        if not bool(all_valid):
            bad = int(tf.boolean_mask(label, tf.logical_not(valid))[0])
            raise tf.errors.InvalidArgumentError(
                None, None, f"label id out of range: found {bad}; {detail}")
        return None

    def bad_value():
        return tf.cast(tf.boolean_mask(label, tf.logical_not(valid))[0], tf.int64)

    first_bad = tf.cond(all_valid, lambda: tf.constant(0, tf.int64), bad_value)
    return tf.debugging.Assert(all_valid, ["label id out of range: found", first_bad, f"; {detail}"],
                               summarize=1, name="validate_labels")


# How ``to_semantics`` builds its map, for the graph it goes into (the same 0/1 values each way)
ONEHOT_FORMS = ("one_hot", "comparison", "arithmetic")


def to_semantics(label, instance=None, *, config, validate=True, dtype=tf.float32,
                 onehot_form="one_hot"):
    """Turns an integer label map (and instance map) into the generator / discriminator input.

    Channels: one-hot over ``num_classes`` (+1 dontcare channel when ``contain_dontcare``: id 255
    goes to index ``num_classes``, and id ``num_classes`` itself, which the reference's loader
    produces from 255, is accepted too), then the instance-edge channel when ``use_instance``.
    An OASIS config (``model.generator: oasis``) gets OASIS' layout instead: ``num_classes + 1``
    one-hot channels with dontcare at channel 0 (``label_channel_index``), so the same PNG gives
    a different one-hot than for SPADE.

    Args:
        label: integer [N, H, W] class ids.
        instance: integer [N, H, W] instance ids; required iff the config uses instance maps.
        config: a ``Config`` or ``ModelConfig``.
        validate: check the ids (an out-of-range or negative id is an ``InvalidArgumentError``
            naming the value and the allowed range).
        dtype: output dtype.
        onehot_form: ``one_hot`` (``tf.one_hot``); ``comparison``: ``cast(index == range(C))``,
            for the CPU TFLite graphs (TFLite's int8 ONE_HOT writes its off value as raw 0
            whatever the zero point, -128 for a [0, 1] range, so every 0 became 0.5; a float
            0/1 map quantized by QUANTIZE is exact); ``arithmetic``: float ops only, the
            one-hot and the instance edges (``kernels.delegate_forms``), for the TFLite GPU
            graph. The same values each way.

    Returns:
        NHWC [N, H, W, semantic_channels] tensor of 0/1 values.
    """
    model = _model_config(config)
    label = tf.convert_to_tensor(label)
    _check_integer(label, "label")
    if label.shape.rank != 3:
        raise ValueError(f"label must be [N, H, W], got shape {label.shape}")
    if model.use_instance and instance is None:
        raise ValueError("this config uses instance maps (model.use_instance=true): pass instance=")
    if not model.use_instance and instance is not None:
        raise ValueError("this config does not use instance maps (model.use_instance=false), "
                         "but an instance map was given")
    if onehot_form not in ONEHOT_FORMS:
        raise ValueError(f"onehot_form={onehot_form!r}: one of {', '.join(ONEHOT_FORMS)}")
    label = tf.cast(label, tf.int32)
    check = validate_labels(label, model) if validate else None  # None when eager (raised there)
    with tf.control_dependencies([check] if check is not None else []):
        if onehot_form == "arithmetic":
            onehot = onehot_arithmetic(label, *_channel_ids(model), dtype=dtype)
        elif onehot_form == "comparison":
            index = label_channel_index(label, model)
            classes = tf.range(model.num_label_channels, dtype=index.dtype)
            # through int32: the converter turns cast(equal(...)) back into ONE_HOT
            onehot = tf.cast(tf.cast(tf.equal(index[..., None], classes), tf.int32), dtype)
        else:
            onehot = tf.one_hot(label_channel_index(label, model), model.num_label_channels,
                                dtype=dtype)
    if not model.use_instance:
        return onehot
    instance = tf.convert_to_tensor(instance)
    _check_integer(instance, "instance")
    if instance.shape.rank != 3:
        raise ValueError(f"instance must be [N, H, W], got shape {instance.shape}")
    shape_check = tf.debugging.assert_equal(
        tf.shape(instance), tf.shape(label),
        message="instance map and label map must have the same [N, H, W] shape")
    with tf.control_dependencies([shape_check]):
        if onehot_form == "arithmetic":
            edges = instance_edges_arithmetic(instance, dtype)
        else:
            edges = tf.cast(instance_edges(instance), dtype)[..., None]
    return tf.concat([onehot, edges], axis=-1)


# 8-connected neighbours (and the pixel itself) for the component labelling below
_NEIGHBOURS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)]


def _components(label):
    """For [N, H, W] int32 class ids: each pixel's 8-connected same-class component, as the
    largest flat index (n·H·W + i·W + j) in it, or -1 for class 0. Label propagation: every
    pixel takes the largest id among its same-class neighbours until nothing changes (about
    the component's geodesic diameter in steps)."""
    shape = tf.shape(label)
    n, h, w = shape[0], shape[1], shape[2]
    flat = tf.reshape(tf.range(n * h * w, dtype=tf.int32), shape)
    ids = tf.where(label != 0, flat, -1)
    lab_p = tf.pad(label, [[0, 0], [1, 1], [1, 1]], constant_values=-1)

    def shifted(x_p, di, dj):
        return x_p[:, 1 + di:1 + di + h, 1 + dj:1 + dj + w]

    same = [tf.equal(shifted(lab_p, di, dj), label) for di, dj in _NEIGHBOURS]

    def step(ids, _changed):
        ids_p = tf.pad(ids, [[0, 0], [1, 1], [1, 1]], constant_values=-1)
        new = ids
        for (di, dj), s in zip(_NEIGHBOURS, same):
            new = tf.maximum(new, tf.where(s, shifted(ids_p, di, dj), -1))
        new = tf.where(label != 0, new, -1)
        return new, tf.reduce_any(new != ids)

    ids, _ = tf.while_loop(lambda _ids, changed: changed, step, (ids, tf.constant(True)),
                           maximum_iterations=n * h * w)
    return ids


def intra_class_offsets(label):
    """CLADE's ICPE input (``--add_dist``): for each pixel of a class other than 0, its row and
    column offset from the centroid of its 8-connected same-class component, each divided by
    that component's largest absolute offset along the axis (plus 1e-5); 0 for class 0.

    The reference (tzt101/CLADE ``util/cal_dist_masks.cal_connectedComponents``) computes this
    offline from the full-size label map and stores it, then crops and flips the stored map
    with the image; here it is computed from the label map the network is given, after crop
    and flip, so that serving needs nothing but a label map. A flipped map then gets offsets
    that are flipped correctly (the reference flips its stored map along the wrong axis and
    does not negate the column offsets). Runs in the graph (a SavedModel computes it itself).

    Args:
        label: integer class ids [N, H, W] (or [H, W]).

    Returns:
        float32 [..., H, W, 2]: (row offset, column offset), in [-1, 1].
    """
    label = tf.convert_to_tensor(label)
    _check_integer(label, "label")
    single = label.shape.rank == 2
    if single:
        label = label[None]
    label = tf.cast(label, tf.int32)
    shape = tf.shape(label)
    n, h, w = shape[0], shape[1], shape[2]
    ids = _components(label)
    size = n * h * w
    seg = tf.reshape(tf.where(ids >= 0, ids, size), [-1])  # class 0 -> a dummy segment
    rows = tf.cast(tf.broadcast_to(tf.range(h)[None, :, None], shape), tf.float64)
    cols = tf.cast(tf.broadcast_to(tf.range(w)[None, None, :], shape), tf.float64)
    out = []
    for coord in (rows, cols):
        flat = tf.reshape(coord, [-1])
        total = tf.math.unsorted_segment_sum(flat, seg, size + 1)
        count = tf.math.unsorted_segment_sum(tf.ones_like(flat), seg, size + 1)
        centroid = tf.gather(total / tf.maximum(count, 1.0), seg)
        offset = flat - centroid
        reach = tf.gather(tf.math.unsorted_segment_max(tf.abs(offset), seg, size + 1), seg)
        value = tf.where(seg < size, offset / (reach + 1e-5), 0.0)
        out.append(tf.reshape(tf.cast(value, tf.float32), shape))
    result = tf.stack(out, axis=-1)
    return result[0] if single else result
