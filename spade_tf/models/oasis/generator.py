"""``OASISGenerator``: boschresearch/OASIS ``models/generator.py`` (``OASIS_Generator``), NHWC.

Sushko, Schonfeld et al., "You Only Need Adversarial Supervision for Semantic Image
Synthesis", ICLR 2021 (arXiv:2012.04781), Sec. 3.3 and Fig. 3.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from spade_tf.config import InitType, ModelConfig, NormMode, PerfConfig, SpadeNorm
from spade_tf.layers import (SPADEResBlock, TorchConv2D, at_least_float32, leaky_relu,
                             legacy_nearest_resize, upsample_nearest_2x)
from spade_tf.perf import resolve_perf

WIDTHS = (16, 16, 16, 8, 4, 2, 1)  # OASIS' channels_G multiples, input of block i, then output


def check_noise(noise, hw, z_dim):
    """Raises a ``ValueError`` unless ``noise`` is [N, z_dim] or [N, H, W, z_dim] at ``hw``."""
    broadcast_noise(noise, hw, z_dim)


def broadcast_noise(noise, hw, z_dim):
    """OASIS' 3D noise at resolution ``hw`` from ``noise``: a per-image vector ``[N, z_dim]``
    broadcast over every pixel (what the official generator draws), or a map
    ``[N, H, W, z_dim]`` already (different noise per region: the paper's local editing, which
    the official code cannot take), returned as is."""
    noise = tf.convert_to_tensor(noise)
    if noise.shape.rank == 2:
        if noise.shape[-1] is not None and int(noise.shape[-1]) != z_dim:
            raise ValueError(f"noise has {noise.shape[-1]} channels, this generator takes "
                             f"z_dim={z_dim}")
        n = tf.shape(noise)[0]
        return tf.broadcast_to(noise[:, None, None, :], tf.stack([n, hw[0], hw[1], z_dim]))
    if noise.shape.rank == 4:
        if noise.shape[-1] is not None and int(noise.shape[-1]) != z_dim:
            raise ValueError(f"noise map has {noise.shape[-1]} channels, this generator takes "
                             f"z_dim={z_dim}")
        if None not in noise.shape[1:3] and tuple(noise.shape[1:3]) != tuple(hw):
            raise ValueError(f"noise map is {tuple(noise.shape[1:3])}, the image is {tuple(hw)}: "
                             f"a 3D noise map is given at the output resolution")
        return noise
    raise ValueError(f"noise must be [N, z_dim] or [N, H, W, z_dim], got shape {noise.shape}")


@keras.saving.register_keras_serializable(package="spade_tf")
class OASISGenerator(keras.Model):
    """The OASIS generator (``OASIS_Generator``).

    A per-image noise vector (``--z_dim``, 64) broadcast over the image, or a 3D noise map, is
    concatenated **before** the semantic map; that tensor is resized (legacy nearest) to the
    latent size for the first 3x3 conv ``fc`` (no spectral norm) and feeds every SPADE layer.
    Then ``num_res_blocks`` SPADE residual blocks (``body.0`` ...) of widths
    ``[16, 16, 16, 8, 4, 2, 1] x channels_G``, a 2x nearest upsampling after each but the last,
    LeakyReLU 0.2, ``conv_img`` and tanh. Spectral norm is on the blocks' convs only.

    The blocks are SPADE's own ``SPADEResBlock`` (OASIS' ``ResnetBlock_with_SPADE`` computes the
    same; its SPADE names the parameter-free norm ``first_norm``). With ``norm_mode='clade'``
    they are CLADE blocks (the phone model): the class tables read the one-hot, and the noise
    reaches each CLADE layer through a 1x1 conv added to its beta (our design: no reference
    combines the two; without it the noise would enter only at the 2x2 latent map).

    Args:
        base_filters: ``--channels_G``.
        num_res_blocks: ``--num_res_blocks`` (6).
        crop_size: ``--crop_size``, the output width.
        aspect_ratio: ``--aspect_ratio`` (width / height).
        z_dim: ``--z_dim``, the noise channels.
        noise_3d: not ``--no_3dnoise``: concatenate the noise (else the semantic map alone).
        spectral: not ``--no_spectral_norm``.
        spade_norm: ``--param_free_norm`` (``sync_batch``, ``batch``, ``instance``).
        spade_kernel_size: ``--spade_ks``.
        spade_hidden_filters: SPADE's hidden width (128 in OASIS).
        init_type: the init (OASIS: ``xavier``).
        init_gain: its gain (OASIS: 0.02).
        seed: seed of the noise drawn when none is given.
        norm_mode: ``spade`` (OASIS) or ``clade``.
        onehot_channels: the one-hot channels of the semantic map (classes + dontcare).
        use_instance: the semantic map ends with an instance-edge channel.
        perf: how it computes (``PerfConfig``; not part of the config): the SPADE layers' own
            options, ``broadcast_noise`` among them (a noise vector through SPADE's first conv
            on a 3x3 map, the one-hot by lookups).
        **kwargs: standard ``keras.Model`` arguments.

    Call arguments:
        semantics: float NHWC semantic map (``spade_tf.semantics.to_semantics`` of an OASIS
            config: dontcare at channel 0) at the output resolution.
        noise: ``[N, z_dim]`` (one vector per image) or ``[N, H, W, z_dim]`` (a 3D map);
            drawn from N(0, I) per image when None.
        training: Python bool: batch statistics and a power iteration when True.
        return_activations: also return a dict of outputs keyed like OASIS' modules
            (``fc_in``, ``fc``, ``body.0`` ... before each upsampling, ``conv_img`` pre-tanh).
    """

    def __init__(self, base_filters=64, num_res_blocks=6, crop_size=256, aspect_ratio=1.0,
                 z_dim=64, noise_3d=True, spectral=True, spade_norm="sync_batch",
                 spade_kernel_size=3, spade_hidden_filters=128, init_type="xavier",
                 init_gain=0.02, seed=None, norm_mode="spade", onehot_channels=None,
                 use_instance=False, perf=None, **kwargs):
        super().__init__(**kwargs)
        self.perf = resolve_perf(perf)
        self.base_filters = int(base_filters)
        self.num_res_blocks = int(num_res_blocks)
        self.crop_size = int(crop_size)
        self.aspect_ratio = float(aspect_ratio)
        self.z_dim = int(z_dim)
        self.noise_3d = bool(noise_3d)
        self.spectral = bool(spectral)
        self.spade_norm = str(SpadeNorm.parse(spade_norm, "spade_norm"))
        self.spade_kernel_size = int(spade_kernel_size)
        self.spade_hidden_filters = int(spade_hidden_filters)
        self.init_type = str(InitType.parse(init_type, "init_type"))
        self.init_gain = float(init_gain)
        self.seed = seed
        self.norm_mode = str(NormMode.parse(norm_mode, "norm_mode"))
        self.onehot_channels = None if onehot_channels is None else int(onehot_channels)
        self.use_instance = bool(use_instance)
        if self.norm_mode == NormMode.CLADE.value and not self.onehot_channels:
            raise ValueError("norm_mode='clade' needs onehot_channels (the class tables' rows)")

        geometry = ModelConfig(generator="oasis", crop_size=self.crop_size,
                               aspect_ratio=self.aspect_ratio, num_res_blocks=self.num_res_blocks)
        self.latent_hw = geometry.latent_hw
        self.output_hw = geometry.output_hw

        ch = self.base_filters
        # OASIS' list ends at 1 x ch whatever the depth: keep the last num_res_blocks + 1
        widths = [m * ch for m in WIDTHS[len(WIDTHS) - self.num_res_blocks - 1:]]
        self.widths = widths
        init = dict(init_type=self.init_type, init_gain=self.init_gain, perf=self.perf)
        block = dict(spectral=self.spectral, spade_norm=self.spade_norm,
                     spade_kernel_size=self.spade_kernel_size,
                     spade_hidden_filters=self.spade_hidden_filters, modulation=self.norm_mode,
                     onehot_channels=self.onehot_channels, use_instance=self.use_instance,
                     # every SPADE (or CLADE) layer reads the noise beside the label map
                     noise_channels=self.z_dim if self.noise_3d else 0, **init)
        self.fc = TorchConv2D(widths[0], 3, padding=1, name="fc", **init)
        # plain attributes, never lists: Keras 3 lists are invisible to tf.train.Checkpoint
        for i in range(self.num_res_blocks):
            setattr(self, f"body_{i}", SPADEResBlock(widths[i + 1], name=f"body_{i}", **block))
        self.conv_img = TorchConv2D(3, 3, padding=1, name="conv_img", **init)
        self.seed_generator = keras.random.SeedGenerator(seed, name="noise_seed")

    @property
    def blocks(self) -> list[SPADEResBlock]:
        """The residual blocks in order (OASIS' ``body``)."""
        return [getattr(self, f"body_{i}") for i in range(self.num_res_blocks)]

    def build(self, semantics_shape, noise_shape=None):
        n = semantics_shape[0]
        sh, sw = self.latent_hw
        cin = int(semantics_shape[-1]) + (self.z_dim if self.noise_3d else 0)
        self.fc.build((n, sh, sw, cin))
        shape = [n, sh, sw, self.widths[0]]
        for i, blk in enumerate(self.blocks):
            # the blocks take the semantic map and the noise apart (noise_channels)
            blk.build(tuple(shape), tuple(semantics_shape))
            shape[3] = blk.filters
            if i < self.num_res_blocks - 1:
                shape[1:3] = [shape[1] * 2, shape[2] * 2]
        self.conv_img.build(tuple(shape))

    def sample_noise(self, batch_size):
        """One N(0, I) vector per image, as OASIS draws ``torch.randn(B, z_dim)``."""
        return keras.random.normal((batch_size, self.z_dim), seed=self.seed_generator)

    def call(self, semantics, noise=None, training=False, return_activations=False):
        training = bool(training)
        seg = ops.cast(semantics, self.compute_dtype)
        expected = tuple(self.output_hw)
        if None not in seg.shape[1:3] and tuple(seg.shape[1:3]) != expected:
            raise ValueError(f"semantics has spatial size {tuple(seg.shape[1:3])}, but this generator "
                             f"(crop_size={self.crop_size}, aspect_ratio={self.aspect_ratio}, "
                             f"num_res_blocks={self.num_res_blocks}) produces {expected}")
        acts = {}
        x = legacy_nearest_resize(seg, self.latent_hw)
        block_kw = {}
        if self.noise_3d:
            if noise is None:
                noise = self.sample_noise(tf.shape(seg)[0])
            hw = seg.shape[1:3] if None not in seg.shape[1:3] else tf.shape(seg)[1:3]
            check_noise(noise, hw, self.z_dim)
            noise = ops.cast(noise, self.compute_dtype)
            # OASIS: seg = cat(noise, semantics) feeds fc (resized) and every SPADE layer. The
            # blocks take the two apart (the same convolution: see SPADE's noise_channels), a
            # vector as it is; fc's input is the concatenation at the latent size.
            latent_noise = (broadcast_noise(noise, self.latent_hw, self.z_dim)
                            if noise.shape.rank == 2 else legacy_nearest_resize(noise, self.latent_hw))
            x = ops.concatenate([latent_noise, x], axis=-1)
            block_kw["noise"] = noise
        elif noise is not None:
            raise ValueError("this generator takes no noise (model.noise_3d=false, --no_3dnoise)")
        acts["fc_in"] = x
        x = self.fc(x)
        acts["fc"] = x
        for i, blk in enumerate(self.blocks):
            x = blk(x, seg, training=training, **block_kw)
            acts[f"body.{i}"] = x
            if i < self.num_res_blocks - 1:
                x = upsample_nearest_2x(x, self.perf.resize_upsampling)
        x = self.conv_img(leaky_relu(x))
        acts["conv_img"] = x
        # tanh in float32 under mixed precision: in bfloat16 the image would carry 8 bits of
        # mantissa into the uint8 levels (a level off here and there); no-op in float32
        image = ops.tanh(at_least_float32(x))
        return (image, acts) if return_activations else image

    def get_config(self):
        config = super().get_config()
        config.update(base_filters=self.base_filters, num_res_blocks=self.num_res_blocks,
                      crop_size=self.crop_size, aspect_ratio=self.aspect_ratio, z_dim=self.z_dim,
                      noise_3d=self.noise_3d, spectral=self.spectral, spade_norm=self.spade_norm,
                      spade_kernel_size=self.spade_kernel_size,
                      spade_hidden_filters=self.spade_hidden_filters, init_type=self.init_type,
                      init_gain=self.init_gain, seed=self.seed, norm_mode=self.norm_mode,
                      onehot_channels=self.onehot_channels, use_instance=self.use_instance)
        return config


def oasis_generator_from_config(model: ModelConfig, seed=None,
                                perf: PerfConfig | None = None) -> OASISGenerator:
    """Builds (with weights) the OASIS generator of ``model`` (``model.generator: oasis``)."""
    g = OASISGenerator(
        base_filters=model.base_filters, num_res_blocks=model.num_res_blocks,
        crop_size=model.crop_size, aspect_ratio=model.aspect_ratio, z_dim=model.z_dim,
        noise_3d=model.noise_3d, spectral=model.generator_spectral,
        spade_norm=model.spade_norm.value, spade_kernel_size=model.spade_kernel_size,
        spade_hidden_filters=model.spade_hidden_filters, init_type=model.init_type.value,
        init_gain=model.init_gain, seed=seed, norm_mode=model.norm_mode.value,
        onehot_channels=model.num_label_channels, use_instance=model.use_instance, perf=perf,
        name="generator")
    h, w = model.output_hw
    g.build((None, h, w, model.semantic_channels))
    return g
