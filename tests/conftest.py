"""Shared fixtures. Networks are built once per session.

The reference material lives in ``../shared`` beside the repository; set ``SPADE_TF_SHARED`` to
point elsewhere. Tests that need it are skipped, with the path in the reason, when it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPADE_TF_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "reference" / "fixtures"


def nchw_to_nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def max_err(ours, ref) -> float:
    """The largest absolute difference, after checking that the shapes agree."""
    ours = np.asarray(ours)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)))


class Fixture:
    """An official-parity ``.npz``: its arrays, meta, and the state dict per net."""

    def __init__(self, path: Path):
        with np.load(path) as z:
            self.arrays = {k: z[k] for k in z.files}
        self.meta = json.loads(str(self.arrays["meta"]))
        self.state: dict[str, dict[str, np.ndarray]] = {}
        for k, v in self.arrays.items():
            if k.startswith("sd/"):
                _, net, key = k.split("/", 2)
                self.state.setdefault(net, {})[key] = v

    def __getitem__(self, key):
        return self.arrays[key]

    def keys(self, prefix):
        return sorted(k for k in self.arrays if k.startswith(prefix))


def _fixture(name) -> Fixture:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"parity fixture {path} is absent (set SPADE_TF_SHARED to the shared folder)")
    return Fixture(path)


@pytest.fixture(scope="session")
def fix_a() -> Fixture:
    return _fixture("spade_fixA_normal.npz")


@pytest.fixture(scope="session")
def fix_c() -> Fixture:
    return _fixture("spade_fixC_vae_normal.npz")


def import_fixture(fx: Fixture):
    from spade_tf.convert import config_from_official, from_official

    config = config_from_official(fx.meta["opt"])
    return from_official(fx.state, config), config


@pytest.fixture(scope="session")
def fix_d() -> Fixture:
    return _fixture("clade_fixD_normal.npz")


@pytest.fixture(scope="session")
def fix_f() -> Fixture:
    return _fixture("oasis_fixF_small.npz")


@pytest.fixture(scope="session")
def nets_f(fix_f):
    """Fixture F (boschresearch/OASIS: G, D, EMA) imported, for eval-mode tests."""
    return import_fixture(fix_f)


@pytest.fixture(scope="session")
def nets_d(fix_d):
    """Fixture D (tzt101/CLADE, --norm_mode clade) imported, for eval-mode tests."""
    return import_fixture(fix_d)


@pytest.fixture(scope="session")
def nets_a(fix_a):
    """Fixture A imported (eval-mode tests only: a training forward would change u, v, BN)."""
    return import_fixture(fix_a)


@pytest.fixture(scope="session")
def nets_c(fix_c):
    return import_fixture(fix_c)


@pytest.fixture()
def float64():
    """Keras in double precision for one test: an exactness check then leaves only ~1e-15 of
    rounding (float32 convolutions leave ~5e-5 of noise in a constant map, which instance norm,
    eps 1e-5, magnifies to ~1e-2)."""
    import keras

    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(policy)


@pytest.fixture(scope="session")
def tiny_config():
    from spade_tf.config import load_config

    return load_config("tiny")


@pytest.fixture(scope="session")
def tiny_vae_config():
    from spade_tf.config import load_config

    return load_config("tiny", ["model.use_vae=true"])


@pytest.fixture(scope="session")
def tiny_nets(tiny_vae_config):
    """Tiny G (VAE), D and E, random weights."""
    import keras

    from spade_tf.networks import build_networks

    keras.utils.set_random_seed(1)
    return build_networks(tiny_vae_config, seed=3)


# A tiny synthscapes model (instance maps, no dontcare, no VAE) that tests train for a few steps.
TINY_SYNTHSCAPES = ["data.dataset=synthscapes", "model.num_classes=9", "model.contain_dontcare=false",
                    "data.load_size=64", "train.batch_size=4", "model.base_filters=8"]


def train_tiny_synthscapes(root, steps: int, overrides=()):
    """Trains ``TINY_SYNTHSCAPES`` (plus ``overrides``) for ``steps`` steps from seed 0 and saves
    it under ``root / "ckpt"``; returns (config, the GauGAN, the checkpoint folder)."""
    import keras

    from spade_tf.config import load_config
    from spade_tf.data import build_dataset
    from spade_tf.gan import GauGAN
    from spade_tf.networks import save_networks

    config = load_config("tiny", TINY_SYNTHSCAPES + list(overrides))
    keras.utils.set_random_seed(0)
    gan = GauGAN(config)
    gan.compile()
    gan.fit(build_dataset(config, "train", repeat=True), epochs=1, steps_per_epoch=steps, verbose=0)
    return config, gan, save_networks(gan.networks, config, Path(root) / "ckpt")


def run_python(code: str, timeout=600, env=None) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (own TF runtime) and returns the finished process."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=str(REPO))


def rel_error(a, b):
    """max |a - b| / max |b|, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def copy_weights(target, source):
    """Assigns ``source``'s weights to ``target``'s (the same layer structure)."""
    for a, b in zip(target.weights, source.weights):
        assert a.path == b.path
        a.assign(b)


def block_labels(rng, n, h, w, classes, block, noise=3):
    """Piecewise-constant labels (``block``-pixel squares of random classes) with ``noise``
    single pixels of another class: a map with uniform regions, as real label maps have."""
    lab = np.kron(rng.integers(0, classes, (n, -(-h // block), -(-w // block))),
                  np.ones((block, block), np.int64))[:, :h, :w]
    for _ in range(noise):
        lab[rng.integers(n), rng.integers(h), rng.integers(w)] = rng.integers(classes)
    return lab.astype(np.int32)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium per test process, for the studio's page tests (test_studio.py,
    and the OASIS re-roll in test_oasis.py); they skip, with the reason, where none starts."""
    from spade_tf.studio.browser import BrowserUnavailable, headless_chromium

    try:
        driver = headless_chromium()
    except BrowserUnavailable as e:
        pytest.skip(f"no browser for the studio's page tests: {e}")
    yield driver
    driver.quit()
