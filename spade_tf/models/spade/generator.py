"""``SPADEGenerator`` (spec §3), in NHWC."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from spade_tf.config import (UPSAMPLING_LAYERS, GeneratorKind, InitType, LabelConv, ModelConfig,
                             NormMode, PerfConfig, SpadeNorm, Upsampling)
from spade_tf.kernels.onehot_conv import onehot_indices
from spade_tf.kernels.regions import REGION_MIN_PIXELS, label_regions
from spade_tf.layers import (AffineNorm, SPADEResBlock, TorchConv2D, at_least_float32,
                             label_map_conv, leaky_relu, legacy_nearest_resize, make_initializer,
                             upsample_nearest_2x)
from spade_tf.perf import pop_legacy_perf_keys, resolve_perf
from spade_tf.semantics import intra_class_offsets


@keras.saving.register_keras_serializable(package="spade_tf")
class SPADEGenerator(keras.Model):
    """The SPADE generator (Park et al., CVPR 2019, Fig. 4; spec §3).

    A stack of ``SPADEResBlock``s with nearest 2x upsampling in between, starting from the label
    map downsampled to (sh, sw), or from a latent z (VAE mode), and ending with LReLU, a 3x3
    conv to RGB and tanh. Every block reads the full-resolution semantic map.

    Args:
        base_filters: ``--ngf``.
        num_upsampling_layers: ``normal`` | ``more`` | ``most`` (5, 6, 7 doublings).
        crop_size: ``--crop_size``, the output width.
        aspect_ratio: ``--aspect_ratio`` (width / height).
        use_vae: start from z (``--use_vae``) instead of the downsampled label map.
        z_dim: ``--z_dim``.
        spectral: spectral norm on the res-block convs (``spectral`` in ``--norm_G``).
        spade_norm: SPADE's parameter-free norm (``sync_batch``, ``batch``, ``instance``).
        spade_kernel_size: K of the SPADE convs.
        spade_hidden_filters: SPADE's hidden width (128).
        init_type: ``--init_type``.
        init_gain: ``--init_variance``.
        seed: seed of the generator's own noise (z drawn when a VAE model gets none).
        kind: ``spade`` (the reference) or ``baseline`` (``model.generator``, for the ablation:
            the label map enters only through a conv encoder at the input, ``enc_0`` ..
            ``enc_N``, and every SPADE is an ``AffineNorm``; the decoder is otherwise the same).
        onehot_channels: leading one-hot channels of the semantic map (classes + dontcare);
            None: treat the whole map as dense.
        norm_mode: ``spade`` or ``clade`` (tzt101/CLADE's ``--norm_mode``): every SPADE a
            ``ClassAdaptiveNorm``, gamma and beta looked up per class (needs
            ``onehot_channels``).
        use_instance: the semantic map ends with an instance-edge channel (CLADE passes it on
            as one more channel; SPADE reads it with the rest of the map).
        clade_positional: CLADE's ICPE (``--add_dist``): the call then needs ``positional``.
        perf: how it computes (``PerfConfig``, resolved for the device by
            ``spade_tf.perf.resolve_perf``; default: ``auto``). Not part of the config: a
            reloaded model computes as its new machine prefers. Besides the layers' own options
            (see ``SPADE``), the generator reads ``share_label_features`` (resize the label map
            once per resolution and run the first convs of all SPADE layers there as one conv)
            and ``uniform_regions`` (SPADE's gamma and beta convs only near label boundaries,
            one value per class elsewhere: ``spade_tf.kernels.regions``; needs
            ``onehot_channels``). ``set_perf`` / ``perf_scope`` in ``spade_tf.perf`` change it
            for a built model.
        **kwargs: standard ``keras.Model`` arguments.

    ``perf`` changes how the variables are applied, never which variables exist: a checkpoint
    loads into any choice, and all give the same outputs to float rounding.

    Call arguments:
        semantics: float NHWC semantic map (see ``spade_tf.semantics.to_semantics``) at the
            output resolution.
        z: optional [N, z_dim] latent (VAE models); drawn from N(0, I) when omitted.
        positional: [N, H, W, 2] float intra-class offsets of the label map (CLADE with ICPE:
            ``spade_tf.semantics.intra_class_offsets``); computed from ``semantics`` in the graph
            when None (a TFLite graph, which cannot run that, takes it as an input).
        training: Python bool: batch statistics and a power iteration when True.
        return_activations: also return a dict of every block's output (``fc``, ``head_0``,
            ..., ``conv_img`` before tanh), keyed like the reference's modules.

    Returns:
        NHWC image in [-1, 1] (and the activations dict when asked).
    """

    def __init__(self, base_filters=64, num_upsampling_layers="normal", crop_size=256,
                 aspect_ratio=1.0, use_vae=False, z_dim=256, spectral=True,
                 spade_norm="sync_batch", spade_kernel_size=3, spade_hidden_filters=128,
                 init_type="xavier", init_gain=0.02, seed=None, kind="spade", onehot_channels=None,
                 norm_mode="spade", use_instance=False, clade_positional=False, perf=None,
                 **kwargs):
        pop_legacy_perf_keys(kwargs, type(self).__name__)
        super().__init__(**kwargs)
        self.perf = resolve_perf(perf)
        self.onehot_channels = None if onehot_channels is None else int(onehot_channels)
        self.norm_mode = str(NormMode.parse(norm_mode, "norm_mode"))
        self.use_instance = bool(use_instance)
        self.clade_positional = bool(clade_positional)
        if self.norm_mode == NormMode.CLADE.value and not self.onehot_channels:
            raise ValueError("norm_mode='clade' needs onehot_channels (the class tables' rows)")
        if self.clade_positional and self.norm_mode != NormMode.CLADE.value:
            raise ValueError("clade_positional (ICPE) needs norm_mode='clade'")
        self.kind = str(GeneratorKind.parse(kind, "kind"))
        if self.kind == GeneratorKind.BASELINE.value and use_vae:
            raise ValueError("kind='baseline' starts from the label map: it cannot be used with use_vae")
        self.base_filters = int(base_filters)
        self.num_upsampling_layers = str(Upsampling.parse(num_upsampling_layers,
                                                          "num_upsampling_layers"))
        self.crop_size = int(crop_size)
        self.aspect_ratio = float(aspect_ratio)
        self.use_vae = bool(use_vae)
        self.z_dim = int(z_dim)
        self.spectral = bool(spectral)
        self.spade_norm = str(SpadeNorm.parse(spade_norm, "spade_norm"))
        self.spade_kernel_size = int(spade_kernel_size)
        self.spade_hidden_filters = int(spade_hidden_filters)
        self.init_type = str(InitType.parse(init_type, "init_type"))
        self.init_gain = float(init_gain)
        self.seed = seed

        # Shares the latent-size arithmetic (and its validation) with the config.
        geometry = ModelConfig(crop_size=self.crop_size, aspect_ratio=self.aspect_ratio,
                               num_upsampling_layers=self.num_upsampling_layers,
                               base_filters=self.base_filters)
        self.latent_hw = geometry.latent_hw
        self.output_hw = geometry.output_hw

        nf = self.base_filters
        init = dict(init_type=self.init_type, init_gain=self.init_gain, perf=self.perf)
        baseline = self.kind == GeneratorKind.BASELINE.value
        block = dict(spectral=self.spectral, spade_norm=self.spade_norm,
                     spade_kernel_size=self.spade_kernel_size,
                     spade_hidden_filters=self.spade_hidden_filters,
                     modulation="affine" if baseline else self.norm_mode,
                     onehot_channels=self.onehot_channels, use_instance=self.use_instance,
                     positional=self.clade_positional, **init)
        sh, sw = self.latent_hw
        self.num_encoder_convs = 0
        if baseline:
            # enc_0: 3x3 conv at full resolution, then one stride-2 3x3 conv per doubling of the
            # decoder, widths doubling up to 16nf; instance norm + learned affine + LReLU after
            # each but the last, which feeds head_0 directly, as fc does in SPADE.
            n_down = UPSAMPLING_LAYERS[Upsampling(self.num_upsampling_layers)]
            self.num_encoder_convs = n_down + 1
            for i in range(self.num_encoder_convs):
                f = min(nf * 2**i, 16 * nf) if i < n_down else 16 * nf
                setattr(self, f"enc_{i}", TorchConv2D(f, 3, strides=1 if i == 0 else 2, padding=1,
                                                      name=f"enc_{i}", **init))
                if i < n_down:
                    setattr(self, f"enc_norm_{i}", AffineNorm("instance", init_gain=self.init_gain,
                                                              name=f"enc_norm_{i}", perf=self.perf))
        elif self.use_vae:
            # Linear(z_dim -> 16nf*sh*sw); its output is read channel-major (see call()).
            self.fc = keras.layers.Dense(  # not a conv: no perf
                16 * nf * sh * sw, name="fc",
                kernel_initializer=make_initializer(self.init_type, self.init_gain))
        else:
            self.fc = TorchConv2D(16 * nf, 3, padding=1, name="fc", **init)
        self.head_0 = SPADEResBlock(16 * nf, name="head_0", **block)
        self.G_middle_0 = SPADEResBlock(16 * nf, name="G_middle_0", **block)
        self.G_middle_1 = SPADEResBlock(16 * nf, name="G_middle_1", **block)
        # Sublayers are plain attributes named like the reference's modules, never lists: Keras 3
        # lists are invisible to tf.train.Checkpoint, whose object graph our checkpoints use.
        widths = [8 * nf, 4 * nf, 2 * nf, nf]
        if self.num_upsampling_layers == Upsampling.MOST.value:
            widths.append(nf // 2)
        self.num_up_blocks = len(widths)
        for i, f in enumerate(widths):
            setattr(self, f"up_{i}", SPADEResBlock(f, name=f"up_{i}", **block))
        self.final_nc = widths[-1]
        self.conv_img = TorchConv2D(3, 3, padding=1, name="conv_img", **init)
        self.seed_generator = keras.random.SeedGenerator(seed, name="noise_seed")

    @property
    def encoder_layers(self) -> list:
        """The baseline's input encoder as (conv, norm or None) pairs; empty for SPADE."""
        n = self.num_encoder_convs
        return [(getattr(self, f"enc_{i}"), getattr(self, f"enc_norm_{i}", None)) for i in range(n)]

    def encode_labels(self, seg, training=False):
        """The baseline's input stage: full-resolution semantics to the (sh, sw) latent map."""
        x = seg
        for conv, norm in self.encoder_layers:
            x = conv(x)
            if norm is not None:
                x = leaky_relu(norm(x, training=training))
        return x

    @property
    def up_blocks(self) -> list[SPADEResBlock]:
        return [getattr(self, f"up_{i}") for i in range(self.num_up_blocks)]

    @property
    def blocks(self) -> list[SPADEResBlock]:
        """The residual blocks in forward order; their names are the reference's module names."""
        return [self.head_0, self.G_middle_0, self.G_middle_1] + list(self.up_blocks)

    def _extra_up_after_middle_0(self) -> bool:
        return self.num_upsampling_layers in (Upsampling.MORE.value, Upsampling.MOST.value)

    def build(self, semantics_shape, z_shape=None):
        n = semantics_shape[0]
        sh, sw = self.latent_hw
        nf = self.base_filters
        if self.encoder_layers:
            shape = list(semantics_shape)
            for conv, norm in self.encoder_layers:
                conv.build(tuple(shape))
                shape = list(conv.compute_output_shape(tuple(shape)))
                if norm is not None:
                    norm.build(tuple(shape))
        elif self.use_vae:
            self.fc.build((n, self.z_dim))
        else:
            self.fc.build((n, sh, sw, semantics_shape[-1]))
        shape = [n, sh, sw, 16 * nf]
        self.head_0.build(tuple(shape), semantics_shape)
        shape[1:3] = [shape[1] * 2, shape[2] * 2]
        self.G_middle_0.build(tuple(shape), semantics_shape)
        if self._extra_up_after_middle_0():
            shape[1:3] = [shape[1] * 2, shape[2] * 2]
        self.G_middle_1.build(tuple(shape), semantics_shape)
        for blk in self.up_blocks:
            shape[1:3] = [shape[1] * 2, shape[2] * 2]
            blk.build(tuple(shape), semantics_shape)
            shape[3] = blk.filters
        self.conv_img.build(tuple(shape))

    def block_resolutions(self) -> list:
        """[(block, (h, w))] in forward order: the resolution each residual block works at."""
        h, w = self.latent_hw
        out = [(self.head_0, (h, w)), (self.G_middle_0, (2 * h, 2 * w))]
        if self._extra_up_after_middle_0():
            h, w = 2 * h, 2 * w
        h, w = 2 * h, 2 * w
        out.append((self.G_middle_1, (h, w)))
        for blk in self.up_blocks:
            h, w = 2 * h, 2 * w
            out.append((blk, (h, w)))
        return out

    def _uses_regions(self):
        return (bool(self.perf.uniform_regions) and bool(self.onehot_channels)
                and self._spade_modulated())

    def _spade_modulated(self) -> bool:
        """Whether the blocks' norms are SPADE layers (not CLADE, not the baseline's)."""
        return self.kind == GeneratorKind.SPADE.value and self.norm_mode == NormMode.SPADE.value

    def resized_label_maps(self, seg):
        """{(h, w): (seg, indices)}: the label map at each block resolution, and its
        ``onehot_indices`` when SPADE reads it by lookups or uses regions (else None), each
        computed once."""
        lookup = self.perf.label_conv is not LabelConv.DENSE or self._uses_regions()
        indices = (onehot_indices(seg[..., :self.onehot_channels])
                   if lookup and self.onehot_channels else None)
        out = {}
        for _, hw in self.block_resolutions():
            if hw not in out:
                idx = None if indices is None else legacy_nearest_resize(indices[..., None], hw)[..., 0]
                out[hw] = (legacy_nearest_resize(seg, hw), idx)
        return out

    def label_regions(self, maps):
        """{(h, w): LabelRegions} at the resolutions of at least REGION_MIN_PIXELS pixels, from
        ``resized_label_maps``' output (empty without ``uniform_regions``)."""
        if not self._uses_regions():
            return {}
        n = self.onehot_channels
        return {hw: label_regions(idx, seg_r[..., n:], self.spade_kernel_size)
                for hw, (seg_r, idx) in maps.items() if hw[0] * hw[1] >= REGION_MIN_PIXELS}

    def shared_label_features(self, seg, maps=None):
        """{block name: {SPADE name: relu(mlp_shared(seg at the block's resolution))}}.

        The label map is resized once per resolution (and its one-hot indices computed once),
        and the shared convs of every SPADE layer at one resolution (up to 4 for ade20k at
        16x16, 3 in each up block) run as one conv with their kernels concatenated, then split:
        the same products, fewer passes over the label map.
        """
        groups = {}
        for blk, hw in self.block_resolutions():
            for name, spade in blk.spade_layers.items():
                groups.setdefault(hw, []).append((blk.name, name, spade))
        maps = maps or self.resized_label_maps(seg)
        out = {blk.name: {} for blk in self.blocks}
        for hw, members in groups.items():
            seg_r, idx_r = maps[hw]
            kernels, biases = zip(*(spade.shared_kernel() for _, _, spade in members))
            first = members[0][2]
            y = label_map_conv(first.mlp_shared, ops.concatenate(kernels, -1),
                               ops.concatenate(biases, -1), seg_r, idx_r, self.onehot_channels,
                               self.perf.label_conv)
            widths = [int(k.shape[-1]) for k in kernels]
            for (blk_name, name, _), part in zip(members, tf.split(y, widths, axis=-1)):
                # ReLU after the split: the ReLU's output, which its gradient keeps, is then the
                # same tensor that the next conv keeps (before the split they were two copies).
                out[blk_name][name] = ops.relu(part)
        return out

    def sample_z(self, batch_size):
        return keras.random.normal((batch_size, self.z_dim), seed=self.seed_generator)

    def call(self, semantics, z=None, positional=None, training=False, return_activations=False):
        training = bool(training)
        seg = ops.cast(semantics, self.compute_dtype)
        expected = tuple(self.output_hw)
        if None not in seg.shape[1:3] and tuple(seg.shape[1:3]) != expected:
            raise ValueError(f"semantics has spatial size {tuple(seg.shape[1:3])}, but this generator "
                             f"(crop_size={self.crop_size}, aspect_ratio={self.aspect_ratio}, "
                             f"{self.num_upsampling_layers}) produces {expected}")
        acts = {}
        sh, sw = self.latent_hw
        if self.use_vae:
            if z is None:
                z = self.sample_z(tf.shape(seg)[0])
            flat = self.fc(ops.cast(z, self.compute_dtype))
            acts["fc"] = flat
            # The reference views the Linear output as NCHW (16nf, sh, sw): channel-major.
            x = ops.transpose(ops.reshape(flat, (-1, 16 * self.base_filters, sh, sw)), (0, 2, 3, 1))
        elif self.encoder_layers:
            x = self.encode_labels(seg, training=training)
            acts["encoder"] = x
        else:
            x = self.fc(legacy_nearest_resize(seg, (sh, sw)))
            acts["fc"] = x
        hidden, maps = {}, {}
        all_maps = self.resized_label_maps(seg) if (
            self._uses_regions() or self.perf.share_label_features) else {}
        regions = self.label_regions(all_maps)
        if self.perf.share_label_features and self._spade_modulated():
            if self.perf.sequential_inference and not training:
                # Only the resized maps are shared: each SPADE layer computes its own features
                # when its turn comes (see SPADE._sequential_inference).
                maps = all_maps
            else:
                hidden = self.shared_label_features(seg, all_maps)
        resolution = {blk.name: hw for blk, hw in self.block_resolutions()}

        if self.clade_positional and positional is None:
            # ICPE from the label map itself (the argmax of its one-hot channels: the class ids,
            # dontcare as one more class), in the graph: callers and servers need nothing else
            positional = intra_class_offsets(
                tf.argmax(seg[..., :self.onehot_channels], axis=-1, output_type=tf.int32))

        def block(blk, t):
            kw = dict(training=training)
            if self.clade_positional:
                kw["positional"] = positional
            if resolution[blk.name] in regions:
                kw["regions"] = regions[resolution[blk.name]]
            if blk.name in hidden:
                return blk(t, seg, hidden=hidden[blk.name], **kw)
            if maps:
                seg_r, idx_r = maps[resolution[blk.name]]
                return blk(t, seg_r, indices=idx_r, **kw)
            return blk(t, seg, **kw)

        x = block(self.head_0, x)
        acts["head_0"] = x
        x = upsample_nearest_2x(x, self.perf.resize_upsampling)
        x = block(self.G_middle_0, x)
        acts["G_middle_0"] = x
        if self._extra_up_after_middle_0():
            x = upsample_nearest_2x(x, self.perf.resize_upsampling)
        x = block(self.G_middle_1, x)
        acts["G_middle_1"] = x
        for blk in self.up_blocks:
            x = block(blk, upsample_nearest_2x(x, self.perf.resize_upsampling))
            acts[blk.name] = x
        x = self.conv_img(leaky_relu(x))
        acts["conv_img"] = x
        # tanh in float32 under mixed precision: in bfloat16 the image would carry 8 bits of
        # mantissa into the uint8 levels (a level off here and there); no-op in float32
        image = ops.tanh(at_least_float32(x))
        return (image, acts) if return_activations else image

    def get_config(self):
        config = super().get_config()
        config.update(base_filters=self.base_filters,
                      num_upsampling_layers=self.num_upsampling_layers, crop_size=self.crop_size,
                      aspect_ratio=self.aspect_ratio, use_vae=self.use_vae, z_dim=self.z_dim,
                      spectral=self.spectral, spade_norm=self.spade_norm,
                      spade_kernel_size=self.spade_kernel_size,
                      spade_hidden_filters=self.spade_hidden_filters, init_type=self.init_type,
                      init_gain=self.init_gain, seed=self.seed, kind=self.kind,
                      onehot_channels=self.onehot_channels, norm_mode=self.norm_mode,
                      use_instance=self.use_instance, clade_positional=self.clade_positional)
        return config


def generator_from_config(model: ModelConfig, seed=None, perf: PerfConfig | None = None
                          ) -> SPADEGenerator:
    """Builds (with weights) a generator for ``model``, computing as ``perf`` says (default:
    ``auto``, resolved for this device)."""
    g = SPADEGenerator(
        base_filters=model.base_filters, num_upsampling_layers=model.num_upsampling_layers.value,
        crop_size=model.crop_size, aspect_ratio=model.aspect_ratio, use_vae=model.use_vae,
        z_dim=model.z_dim, spectral=model.generator_spectral, spade_norm=model.spade_norm.value,
        spade_kernel_size=model.spade_kernel_size, spade_hidden_filters=model.spade_hidden_filters,
        init_type=model.init_type.value, init_gain=model.init_gain, seed=seed,
        kind=model.generator.value, onehot_channels=model.num_label_channels,
        norm_mode=model.norm_mode.value, use_instance=model.use_instance,
        clade_positional=model.clade_positional, perf=perf, name="generator")
    h, w = model.output_hw
    g.build((None, h, w, model.semantic_channels))
    return g

