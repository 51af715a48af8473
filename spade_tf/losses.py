"""SPADE's losses (spec §6): GAN (hinge / original / ls / w), feature matching, KL, VGG19.

Every function returns a per-replica *mean* (the KL is a sum, as in the reference). Scaling for
``tf.distribute`` (dividing by the number of replicas) is not done here: the training step
applies it once, in one place, to every term.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from spade_tf.config import GanMode
from spade_tf.layers import at_least_float32
from spade_tf.weights import read_torch_state_dict

log = logging.getLogger(__name__)


def _logits(outputs):
    """The last output (patch logits) of every scale: D returns a list of per-scale lists."""
    return [scale[-1] if isinstance(scale, (list, tuple)) else scale for scale in outputs]


def _one_scale_gan_loss(mode: GanMode, pred, target_is_real: bool, for_discriminator: bool):
    """The GAN loss of one discriminator scale's patch logits (``GANLoss.loss``)."""
    pred = at_least_float32(pred)
    if mode is GanMode.HINGE:
        if for_discriminator:
            return (tf.reduce_mean(tf.nn.relu(1.0 - pred)) if target_is_real
                    else tf.reduce_mean(tf.nn.relu(1.0 + pred)))
        if not target_is_real:  # the reference asserts this too
            raise ValueError("the hinge generator loss is defined for target_is_real=True only")
        return -tf.reduce_mean(pred)
    if mode is GanMode.ORIGINAL:  # BCE with logits against 1 / 0
        target = tf.ones_like(pred) if target_is_real else tf.zeros_like(pred)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=pred))
    if mode is GanMode.LS:
        return tf.reduce_mean(tf.square(pred - (1.0 if target_is_real else 0.0)))
    # 'w': Wasserstein
    return -tf.reduce_mean(pred) if target_is_real else tf.reduce_mean(pred)


def gan_loss(outputs, target_is_real: bool, for_discriminator: bool, mode="hinge"):
    """The reference's ``GANLoss`` on multiscale D outputs: per-scale loss, averaged over scales."""
    mode = GanMode.parse(mode, "gan_mode")
    preds = _logits(outputs)
    return tf.add_n([_one_scale_gan_loss(mode, p, target_is_real, for_discriminator)
                     for p in preds]) / float(len(preds))


def generator_gan_loss(fake_outputs, mode="hinge"):
    """``GAN``: the generator's adversarial term."""
    return gan_loss(fake_outputs, True, for_discriminator=False, mode=mode)


def discriminator_losses(real_outputs, fake_outputs, mode="hinge"):
    """``(D_real, D_Fake)``: the discriminator's two terms (their sum is its loss)."""
    return (gan_loss(real_outputs, True, for_discriminator=True, mode=mode),
            gan_loss(fake_outputs, False, for_discriminator=True, mode=mode))


def feature_matching_loss(fake_outputs, real_outputs, lambda_feat=10.0):
    """``GAN_Feat``: L1 between D's intermediate features of fake and (detached) real.

    Sum over scales and over every output but the last (the logits), each term
    ``mean(|fake - real|) * lambda_feat / num_D``.
    """
    num_d = len(fake_outputs)
    terms = []
    for fake_scale, real_scale in zip(fake_outputs, real_outputs):
        for f, r in zip(fake_scale[:-1], real_scale[:-1]):
            f = at_least_float32(f)
            r = tf.stop_gradient(at_least_float32(r))
            terms.append(tf.reduce_mean(tf.abs(f - r)))
    if not terms:
        raise ValueError("feature matching needs the discriminator's intermediate features "
                         "(build it with return_features=True)")
    return tf.add_n(terms) * (float(lambda_feat) / num_d)


def kl_divergence(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)), **summed** over batch and dimensions (spec §4).

    The reference's ``KLDLoss``; the ``KLD`` term is this times ``lambda_kld``.
    """
    mu = at_least_float32(mu)
    logvar = at_least_float32(logvar)
    return -0.5 * tf.reduce_sum(1.0 + logvar - tf.square(mu) - tf.exp(logvar))


# --------------------------------------------------------------------------- VGG19


# torchvision's vgg19().features indices of the 16 convs, in order.
_TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
VGG_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)  # relu1_1 ... relu5_1


class VGGLoss:
    """The reference's ``VGGLoss``: weighted L1 between VGG19 features of fake and real.

    Features at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (torchvision ``features`` indices
    1, 6, 11, 20, 29) with weights 1/32, 1/16, 1/8, 1/4, 1; target features detached. Images go
    in as they are, in [-1, 1], **without** ImageNet mean/std normalization, as in the reference.

    Weights come from a local file, never from the network:

    - ``.npz`` (or ``.pth``, needs torch) holding torchvision's ``vgg19`` state dict keys
      ``features.N.weight`` / ``features.N.bias``: the weights the reference uses;
    - ``.weights.h5``: a Keras ``VGG19(include_top=False)`` weights file. Keras' ImageNet VGG19 was
      trained on BGR, mean-subtracted 0..255 input, so its features on [-1, 1] RGB differ from the
      reference's; prefer the torchvision weights for parity.

    Args:
        weights: path of the weights file; ``None`` builds a randomly initialised VGG19 (tests).
        lambda_vgg: the overall factor ``--lambda_vgg`` (the reference's ``VGG`` term includes it).
    """

    def __init__(self, weights: str | Path | None = None, lambda_vgg: float = 10.0):
        self.weights = None if weights is None else str(weights)
        self.lambda_vgg = float(lambda_vgg)
        base = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
        if self.weights is not None:
            load_vgg19_weights(base, self.weights)
        outputs = [base.get_layer(n).output for n in VGG_LAYERS]
        self.model = keras.Model(base.input, outputs, name="vgg19_features")
        self.model.trainable = False

    def __call__(self, fake, real):
        both = tf.concat([tf.cast(fake, tf.float32), tf.cast(real, tf.float32)], 0)
        feats = self.model(both, training=False)
        n = tf.shape(fake)[0]
        total = 0.0
        for w, f in zip(VGG_WEIGHTS, feats):
            total += w * tf.reduce_mean(tf.abs(f[:n] - tf.stop_gradient(f[n:])))
        return total * self.lambda_vgg


def load_vgg19_weights(model: keras.Model, path: str) -> None:
    """Loads a local VGG19 weights file into a Keras ``VGG19(include_top=False)`` (see VGGLoss)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"VGG19 weights file not found: {p} (loss.vgg_weights). Convert "
                                f"torchvision's vgg19 state dict to .npz, or set loss.vgg_weights=null")
    if p.name.endswith(".h5"):
        model.load_weights(str(p))
        return
    if p.suffix == ".pth":
        state = read_torch_state_dict(p)
    else:
        with np.load(p) as z:
            state = {k: z[k] for k in z.files}
    state = {k[len("features."):] if k.startswith("features.") else k: v for k, v in state.items()}
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    for layer, idx in zip(convs, _TORCHVISION_CONV_INDICES):
        try:
            w, b = state[f"{idx}.weight"], state[f"{idx}.bias"]
        except KeyError as e:
            raise ValueError(f"{p}: missing VGG19 key features.{e.args[0]}; expected torchvision "
                             f"vgg19 keys features.N.weight / features.N.bias") from None
        layer.set_weights([np.transpose(w, (2, 3, 1, 0)), b])


def make_vgg_loss(weights: str | None, lambda_vgg: float):
    """The VGG term for a config: ``None`` (off, and logged) when no weights file is set."""
    if weights is None:
        log.warning("VGG perceptual loss is OFF: no VGG19 weights file given (loss.vgg_weights). "
                    "The reference uses it with lambda_vgg=%s; nothing is downloaded here.", lambda_vgg)
        return None
    if lambda_vgg == 0:
        return None
    return VGGLoss(weights, lambda_vgg)
