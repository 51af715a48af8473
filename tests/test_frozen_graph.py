"""spade_tf.frozen_graph and precision.FrozenGenerator: the bf16 SavedModel's form (weights as
constants, weight-only results folded) computes what the variable form computes."""

import numpy as np
import pytest
import tensorflow as tf

from spade_tf.frozen_graph import freeze


def _ops(concrete):
    return [n for n in concrete.graph.as_graph_def().node]


def test_frozen_generator_matches_the_generator_and_keeps_no_variable_or_weight_work():
    """The tiny VAE generator (spectral-norm convs, batch norm, a latent) in bf16 and float32:
    the frozen forward equals the variable one (bf16: to bf16's rounding, as oneDNN may sum in
    another order), reads no variable, and every conv's filter is a constant: sigma and the
    casts were folded at freeze time."""
    from spade_tf.perf import PLAIN, perf_scope
    from spade_tf.precision import FrozenGenerator, bf16_generator
    from spade_tf.semantics import to_semantics

    from spade_tf.config import load_config
    from spade_tf.networks import build_generator

    # gain 1 (as the parity fixtures): outputs far from zero, so that a difference shows
    config = load_config("tiny", ["model.use_vae=true", "model.init_gain=1.0"])
    g32 = build_generator(config.model, seed=3)
    h, w = (int(v) for v in g32.output_hw)
    rng = np.random.default_rng(0)
    label = rng.integers(0, config.model.num_classes, (2, h, w)).astype(np.int32)
    inst = rng.integers(0, 4, (2, h, w)).astype(np.int32) if config.model.use_instance else None
    sem = to_semantics(label, inst, config=config)
    z = tf.constant(rng.standard_normal((2, config.model.z_dim)), tf.float32)
    for g, tol in ((g32, 1e-5), (bf16_generator(g32, config), 2e-2)):
        frozen = FrozenGenerator(g, PLAIN)
        with perf_scope(g, PLAIN):
            want = g(sem, z=z, training=False).numpy()
        got = frozen(sem, z=z).numpy()
        assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max()), (
            g.dtype_policy.name, np.abs(got - want).max())
        assert np.abs(want).max() > 0.05  # not a blank image
        (concrete,) = frozen._frozen.values()
        nodes = {n.name: n for n in _ops(concrete)}
        assert not [n for n in nodes.values() if "Variable" in n.op], "a variable survived"
        convs = [n for n in nodes.values() if n.op == "Conv2D"]
        assert len(convs) >= 10
        for conv in convs:  # the filter: a constant (directly, or through an Identity)
            src = nodes[conv.input[1].split(":")[0]]
            while src.op == "Identity":
                src = nodes[src.input[0].split(":")[0]]
            assert src.op == "Const", (conv.name, src.op)
        if g is not g32:
            assert {tf.as_dtype(n.attr["T"].type) for n in convs} == {tf.bfloat16}
    with pytest.raises(ValueError, match="inference only"):
        frozen(sem, z=z, training=True)


def test_freeze_refuses_side_effects_that_no_input_reaches():
    """A stateful op outside the inputs' cone (here a random draw) cannot become a constant:
    the freeze says so rather than serving one fixed draw."""
    fn = tf.function(lambda x: x + tf.random.uniform([3]))
    with pytest.raises(ValueError, match="side effects"):
        freeze(fn.get_concrete_function(tf.TensorSpec([3])))


def test_frozen_oasis_generator_takes_its_noise_as_a_vector_or_a_map():
    """OASIS' two noise forms freeze separately (one graph per call structure), and each
    computes what the variable generator computes."""
    from spade_tf.config import load_config
    from spade_tf.networks import build_generator
    from spade_tf.perf import PLAIN, perf_scope
    from spade_tf.precision import FrozenGenerator
    from spade_tf.semantics import to_semantics

    config = load_config("oasis_light", ["model.init_gain=1.0"])
    g = build_generator(config.model, seed=0)
    h, w = (int(v) for v in g.output_hw)
    rng = np.random.default_rng(0)
    label = rng.integers(0, config.model.num_classes, (1, h, w)).astype(np.int32)
    sem = to_semantics(label, label if config.model.use_instance else None, config=config)
    z = tf.constant(rng.standard_normal((1, g.z_dim)), tf.float32)
    frozen = FrozenGenerator(g, PLAIN)
    for noise in (z, tf.broadcast_to(z[:, None, None, :], (1, h, w, g.z_dim))):
        with perf_scope(g, PLAIN):
            want = g(sem, noise=noise, training=False).numpy()
        got = frozen(sem, noise=noise).numpy()
        assert np.abs(want).max() > 0.05
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), np.abs(got - want).max()
    assert len(frozen._frozen) == 2
