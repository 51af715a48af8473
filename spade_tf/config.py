"""Configuration: frozen dataclasses, strict YAML loading and ``key=value`` overrides.

Defaults of the dataclasses are the official NVlabs/SPADE option defaults (``base_options.py`` /
``train_options.py``); the dataset presets in ``configs/*.yaml`` list only what the official
dataset modes change (spec §9). Every field names the official option it stands for.

Loading is strict: an unknown key, a value of the wrong type, or an enum value that is not
allowed is a ``ValueError`` that names the file (or override) and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import typing
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml


class StrEnum(str, enum.Enum):
    """A string enum whose invalid values raise a ``ValueError`` listing the allowed ones."""

    @classmethod
    def parse(cls, value: Any, where: str = "") -> "StrEnum":
        if isinstance(value, cls):
            return value
        for member in cls:
            if value == member.value:
                return member
        allowed = ", ".join(repr(m.value) for m in cls)
        loc = f"{where}: " if where else ""
        raise ValueError(f"{loc}invalid value {value!r}; allowed values: {allowed}")

    def __str__(self) -> str:
        return self.value


class Upsampling(StrEnum):
    """``--num_upsampling_layers``: 5, 6 or 7 doublings from the latent map to the output."""

    NORMAL = "normal"
    MORE = "more"
    MOST = "most"


class GeneratorKind(StrEnum):
    """Which generator to build (not a reference option: the baseline is for the ablation)."""

    SPADE = "spade"  # the reference's SPADEGenerator
    # The paper's "label map at the input" comparison: a conv encoder of the full-resolution
    # label map down to the latent size, then the same residual decoder with SPADE replaced by
    # the same parameter-free norm plus a learned per-channel affine (no label map after the input).
    BASELINE = "baseline"
    # Sushko, Schonfeld et al., "You Only Need Adversarial Supervision for Semantic Image
    # Synthesis" (ICLR 2021; boschresearch/OASIS): 3D noise into every SPADE layer, a U-Net
    # segmenter D with N+1 classes, class-balanced N+1 cross-entropy and LabelMix. Choosing it
    # chooses the OASIS family: its D, its losses and its label layout (dontcare = channel 0).
    OASIS = "oasis"


class Family(StrEnum):
    """The network family a config describes (derived from ``model.generator``): which G, D and
    losses the one training step uses."""

    SPADE = "spade"  # NVlabs/SPADE and tzt101/CLADE: multiscale PatchGAN D, hinge + feature matching
    OASIS = "oasis"  # boschresearch/OASIS: U-Net segmenter D, N+1 cross-entropy, LabelMix


class NormMode(StrEnum):
    """``--norm_mode`` of tzt101/CLADE: how the label map modulates each normalization."""

    SPADE = "spade"  # Park et al.: per-pixel gamma/beta from convs of the label map
    # Tan et al., "Efficient Semantic Image Synthesis via Class-Adaptive Normalization" (TPAMI
    # 2021): gamma/beta looked up per class from two [classes, C] tables
    CLADE = "clade"


class SpadeNorm(StrEnum):
    """Parameter-free normalization inside SPADE (the middle of ``--norm_G``)."""

    SYNC_BATCH = "sync_batch"  # spadesyncbatch3x3 (official default)
    BATCH = "batch"  # spadebatch3x3
    INSTANCE = "instance"  # spadeinstance3x3


class NormLayer(StrEnum):
    """Normalization after a spectral-norm conv in D and E (``--norm_D``/``--norm_E`` minus 'spectral')."""

    INSTANCE = "instance"
    BATCH = "batch"
    SYNC_BATCH = "sync_batch"
    NONE = "none"  # the conv keeps its bias


class InitType(StrEnum):
    """``--init_type``."""

    XAVIER = "xavier"
    NORMAL = "normal"
    XAVIER_UNIFORM = "xavier_uniform"
    KAIMING = "kaiming"
    ORTHOGONAL = "orthogonal"
    NONE = "none"


class GanMode(StrEnum):
    """``--gan_mode``."""

    HINGE = "hinge"
    ORIGINAL = "original"
    LS = "ls"
    W = "w"


class Precision(StrEnum):
    """Keras dtype policy for training."""

    FLOAT32 = "float32"
    MIXED_FLOAT16 = "mixed_float16"  # with dynamic loss scaling
    MIXED_BFLOAT16 = "mixed_bfloat16"


class DatasetPreset(StrEnum):
    """``--dataset_mode`` (``coco`` is called ``coco_stuff`` here)."""

    ADE20K = "ade20k"
    CITYSCAPES = "cityscapes"
    COCO_STUFF = "coco_stuff"
    FACADES = "facades"
    CUSTOM = "custom"
    SYNTHSCAPES = "synthscapes"  # built-in procedural landscapes (spade_tf.data.synthscapes)


class Preprocess(StrEnum):
    """``--preprocess_mode``."""

    RESIZE_AND_CROP = "resize_and_crop"
    CROP = "crop"
    SCALE_WIDTH = "scale_width"
    SCALE_WIDTH_AND_CROP = "scale_width_and_crop"
    SCALE_SHORTSIDE = "scale_shortside"
    SCALE_SHORTSIDE_AND_CROP = "scale_shortside_and_crop"
    FIXED = "fixed"
    NONE = "none"


class LabelConv(StrEnum):
    """How SPADE's first convolution reads the one-hot label map (``perf.label_conv``)."""

    AUTO = "auto"  # segment_sum on a CPU; dense on a GPU and under XLA (spade_tf.perf)
    DENSE = "dense"  # the reference's form: a KxK conv over every one-hot channel
    # A KxK conv of a one-hot map is a sum of K*K rows of the kernel, one per tap, picked by the
    # class under that tap: embedding lookups instead of multiply-adds. Both are exact for
    # one-hot maps (at most one 1 per pixel), e.g. those of spade_tf.semantics.to_semantics.
    GATHER = "gather"  # K*K tf.gather + add (TFLite builtins)
    SEGMENT_SUM = "segment_sum"  # one fused lookup-and-sum (SparseSegmentSum): fastest on CPU


class CladeLookup(StrEnum):
    """How CLADE looks up its per-class gamma and beta (``perf.clade_lookup``)."""

    AUTO = "auto"  # resolved per device (spade_tf.perf)
    GATHER = "gather"  # argmax, then one tf.gather per table: the reference's form, TFLite builtins
    # one 1x1 conv (a matmul) of the one-hot map with the tables as its kernel: the same numbers
    # for one-hot maps, as a dense GEMM (spade_tf/kernels/class_tables.py)
    ONEHOT_CONV = "onehot_conv"


class FilterGradient(StrEnum):
    """How conv kernel gradients are computed (``perf.filter_gradient``)."""

    AUTO = "auto"  # swapped on a CPU without oneDNN; native with oneDNN, on a GPU, under XLA
    NATIVE = "native"  # Conv2DBackpropFilter
    SWAPPED = "swapped"  # one forward conv with batch and channels swapped (Eigen CPUs)


class Toggle(StrEnum):
    """An optimisation that is on, off, or chosen for the device at run time (``auto``).

    YAML's true / false (and on / off) are accepted for ON / OFF, so configs written before
    ``auto`` existed load unchanged. An unresolved ``auto`` has no truth value: the layers only
    ever see a config resolved by ``spade_tf.perf.resolve_perf``."""

    AUTO = "auto"
    ON = "true"
    OFF = "false"

    @classmethod
    def parse(cls, value: Any, where: str = "") -> "Toggle":
        if isinstance(value, bool):
            return cls.ON if value else cls.OFF
        if isinstance(value, str) and value.strip().lower() in ("on", "yes", "true", "off", "no", "false"):
            return cls.ON if value.strip().lower() in ("on", "yes", "true") else cls.OFF
        return super().parse(value, where)

    def __bool__(self) -> bool:
        if self is Toggle.AUTO:
            raise ValueError("an 'auto' perf option was used before spade_tf.perf.resolve_perf "
                             "resolved it for the device")
        return self is Toggle.ON


UPSAMPLING_LAYERS = {Upsampling.NORMAL: 5, Upsampling.MORE: 6, Upsampling.MOST: 7}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The networks (generator, discriminator, encoder)."""

    num_classes: int = 182  # --label_nc: number of class ids in the label maps
    # --contain_dontcare_label. SPADE: id 255 gets its own channel (index num_classes). OASIS
    # (dontcare is always channel 0): the data's id 0 is its dontcare class (ADE20K, Cityscapes);
    # false: ids 0.. are all classes and move up by one (COCO-Stuff, synthscapes)
    contain_dontcare: bool = False
    use_instance: bool = True  # not --no_instance: append the instance-edge channel
    crop_size: int = 256  # --crop_size: output width
    aspect_ratio: float = 1.0  # --aspect_ratio: width / height of the output
    num_upsampling_layers: Upsampling = Upsampling.NORMAL  # --num_upsampling_layers
    base_filters: int = 64  # --ngf: generator width (also the encoder's width, as in the reference)
    disc_filters: int = 64  # --ndf: discriminator width
    num_discriminators: int = 2  # --num_D: scales of the multiscale discriminator
    disc_layers: int = 4  # --n_layers_D: strided convs per discriminator
    generator: GeneratorKind = GeneratorKind.SPADE  # 'spade' (the reference) or 'baseline' (ablation only)
    generator_spectral: bool = True  # 'spectral' prefix of --norm_G: spectral norm on the res-block convs
    spade_norm: SpadeNorm = SpadeNorm.SYNC_BATCH  # parameter-free norm of --norm_G (spadesyncbatch3x3)
    spade_kernel_size: int = 3  # the KxK of --norm_G (spade...3x3)
    spade_hidden_filters: int = 128  # nhidden, hard-coded to 128 in the reference
    norm_mode: NormMode = NormMode.SPADE  # --norm_mode (tzt101/CLADE): spade or clade
    # --add_dist (CLADE only): ICPE, the intra-class positional encoding scaling gamma and beta
    clade_positional: bool = False
    disc_spectral: bool = True  # 'spectral' prefix of --norm_D (the reference requires it)
    disc_norm: NormLayer = NormLayer.INSTANCE  # --norm_D after 'spectral' (spectralinstance)
    encoder_spectral: bool = True  # 'spectral' prefix of --norm_E
    encoder_norm: NormLayer = NormLayer.INSTANCE  # --norm_E after 'spectral' (spectralinstance)
    use_vae: bool = False  # --use_vae: generator starts from z, with the ConvEncoder
    z_dim: int = 256  # --z_dim: latent size (SPADE's encoder hard-codes 256; OASIS' default, in its presets, is 64)
    init_type: InitType = InitType.XAVIER  # --init_type
    init_gain: float = 0.02  # --init_variance: the gain of the init
    disc_init_gain: Optional[float] = None  # D's own gain (None: init_gain, as the references do)
    # OASIS only (model.generator: oasis):
    noise_3d: bool = True  # not --no_3dnoise: z_dim noise channels before the one-hot, into fc and every SPADE
    num_res_blocks: int = 6  # --num_res_blocks: residual blocks of G and of each half of the U-Net D

    def __post_init__(self) -> None:
        _coerce_enums(self, "model")
        _require(self.num_classes >= 1, "model.num_classes", self.num_classes, "must be >= 1")
        _require(self.crop_size >= 1, "model.crop_size", self.crop_size, "must be >= 1")
        _require(self.aspect_ratio > 0, "model.aspect_ratio", self.aspect_ratio, "must be > 0")
        for name in ("base_filters", "disc_filters", "num_discriminators", "disc_layers", "z_dim",
                     "spade_hidden_filters"):
            _require(getattr(self, name) >= 1, f"model.{name}", getattr(self, name), "must be >= 1")
        _require(self.spade_kernel_size >= 1 and self.spade_kernel_size % 2 == 1,
                 "model.spade_kernel_size", self.spade_kernel_size, "must be odd and >= 1")
        # OASIS' own geometry first: the latent size below depends on num_res_blocks
        if self.generator is GeneratorKind.OASIS:
            _require(2 <= self.num_res_blocks <= 6, "model.num_res_blocks", self.num_res_blocks,
                     "must be 2..6 (the OASIS U-Net discriminator has 6 widths)")
            _require(not self.use_vae, "model.use_vae", self.use_vae,
                     "cannot be combined with model.generator='oasis' (OASIS has no encoder: "
                     "its 3D noise gives the variety)")
            _require(self.crop_size // 2 ** (self.num_res_blocks - 1) >= 1, "model.crop_size",
                     self.crop_size, f"is too small for num_res_blocks={self.num_res_blocks}")
        for name in ("init_gain", "disc_init_gain"):
            value = getattr(self, name)
            _require(value is None or value > 0, f"model.{name}", value, "must be > 0")
        n_up = UPSAMPLING_LAYERS[self.num_upsampling_layers]
        _require(self.generator is GeneratorKind.OASIS or self.crop_size // 2**n_up >= 1,
                 "model.crop_size", self.crop_size,
                 f"is too small for num_upsampling_layers={self.num_upsampling_layers.value!r}: "
                 f"it must be at least {2**n_up}")
        _require(self.latent_hw[0] >= 1, "model.aspect_ratio", self.aspect_ratio,
                 f"gives a latent height of 0 at crop_size {self.crop_size}")
        _require(not (self.generator is GeneratorKind.BASELINE and self.use_vae), "model.generator",
                 self.generator.value, "cannot be combined with model.use_vae (the baseline "
                 "starts from the label map)")
        _require(not self.clade_positional or self.norm_mode is NormMode.CLADE,
                 "model.clade_positional", self.clade_positional,
                 "needs model.norm_mode='clade' (ICPE is part of CLADE)")
        if self.num_upsampling_layers is Upsampling.MOST:
            _require(self.base_filters >= 2, "model.base_filters", self.base_filters,
                     "must be >= 2 with num_upsampling_layers='most' (its last block has ngf//2 filters)")

    @property
    def family(self) -> Family:
        """Which family of networks and losses (``model.generator`` decides)."""
        return Family.OASIS if self.generator is GeneratorKind.OASIS else Family.SPADE

    @property
    def discriminator_init_gain(self) -> float:
        """D's init gain: ``disc_init_gain``, else the shared ``init_gain``."""
        return self.init_gain if self.disc_init_gain is None else self.disc_init_gain

    @property
    def has_latent(self) -> bool:
        """Whether a label map has many images: a VAE's z, or OASIS' noise (both ``z_dim``)."""
        return self.use_vae or (self.family is Family.OASIS and self.noise_3d)

    @property
    def semantic_channels(self) -> int:
        """``semantic_nc``: one-hot classes + dontcare channel + instance-edge channel."""
        return self.num_label_channels + int(self.use_instance)

    @property
    def num_label_channels(self) -> int:
        """One-hot channels, the dontcare channel included. OASIS always has a dontcare channel
        (channel 0, see ``spade_tf.semantics.to_semantics``): num_classes + 1."""
        if self.family is Family.OASIS:
            return self.num_classes + 1
        return self.num_classes + int(self.contain_dontcare)

    @property
    def num_doublings(self) -> int:
        """2x upsamplings from the latent map to the output: 5/6/7 for SPADE's
        ``num_upsampling_layers``, ``num_res_blocks - 1`` for OASIS."""
        if self.family is Family.OASIS:
            return self.num_res_blocks - 1
        return UPSAMPLING_LAYERS[self.num_upsampling_layers]

    @property
    def latent_hw(self) -> tuple[int, int]:
        """(sh, sw) of the generator's first feature map (spec §3; OASIS'
        ``compute_latent_vector_size`` is the same arithmetic with its own doublings)."""
        sw = self.crop_size // 2 ** self.num_doublings
        sh = round(sw / self.aspect_ratio)  # Python's round, as in the reference (banker's on .5)
        return sh, sw

    @property
    def output_hw(self) -> tuple[int, int]:
        """(H, W) of the generated image."""
        sh, sw = self.latent_hw
        f = 2 ** self.num_doublings
        return sh * f, sw * f


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss terms and weights (spec §6)."""

    gan_mode: GanMode = GanMode.HINGE  # --gan_mode
    feature_matching: bool = True  # not --no_ganFeat_loss
    lambda_feat: float = 10.0  # --lambda_feat
    lambda_vgg: float = 10.0  # --lambda_vgg
    lambda_kld: float = 0.05  # --lambda_kld
    # Path to VGG19 weights for the perceptual loss. The reference downloads torchvision's ImageNet
    # weights; we never download, so without a file the VGG term is off (and the log says so).
    vgg_weights: Optional[str] = None
    # OASIS only:
    class_balancing: bool = True  # not --no_balancing_inloss: per-batch class weights in the N+1 loss
    labelmix: bool = True  # not --no_labelmix: the LabelMix consistency term in D's loss
    lambda_labelmix: float = 10.0  # --lambda_labelmix (OASIS' Cityscapes mode: 5)

    def __post_init__(self) -> None:
        _coerce_enums(self, "loss")
        for name in ("lambda_feat", "lambda_vgg", "lambda_kld", "lambda_labelmix"):
            _require(getattr(self, name) >= 0, f"loss.{name}", getattr(self, name), "must be >= 0")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is preprocessed (spec §9)."""

    dataset: DatasetPreset = DatasetPreset.CUSTOM  # --dataset_mode
    root: Optional[str] = None  # --dataroot
    label_dir: Optional[str] = None  # --label_dir (custom)
    image_dir: Optional[str] = None  # --image_dir (custom)
    instance_dir: Optional[str] = None  # --instance_dir (custom)
    file_list: Optional[str] = None  # text file of label paths relative to root, one per line
    preprocess: Preprocess = Preprocess.SCALE_WIDTH_AND_CROP  # --preprocess_mode
    load_size: int = 1024  # --load_size
    flip: bool = True  # not --no_flip
    max_image_pixels: int = 40_000_000  # refuse to decode larger images (decompression bombs)
    skip_bad_files: bool = False  # skip corrupt files (counted and reported) instead of failing
    synth_train_size: int = 2000  # synthscapes: examples in the train split
    synth_val_size: int = 200  # synthscapes: examples in the val split
    parallel_calls: int = -1  # tf.data decode parallelism (-1 = AUTOTUNE)

    def __post_init__(self) -> None:
        _coerce_enums(self, "data")
        _require(self.load_size >= 1, "data.load_size", self.load_size, "must be >= 1")
        _require(self.max_image_pixels >= 1, "data.max_image_pixels", self.max_image_pixels,
                 "must be >= 1")
        _require(self.synth_train_size >= 1 and self.synth_val_size >= 1,
                 "data.synth_train_size/synth_val_size", (self.synth_train_size,
                                                         self.synth_val_size), "must be >= 1")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation (spec §7)."""

    batch_size: int = 1  # --batchSize (global, over all replicas)
    lr: float = 0.0002  # --lr
    ttur: bool = True  # not --no_TTUR: G lr/2, D 2*lr, Adam betas (0, 0.9)
    beta1: float = 0.5  # --beta1, used only with ttur off
    beta2: float = 0.999  # --beta2, used only with ttur off
    lr_g: Optional[float] = None  # OASIS' --lr_g: G's own learning rate (overrides lr and ttur's lr/2)
    lr_d: Optional[float] = None  # OASIS' --lr_d: D's own learning rate (overrides lr and ttur's 2*lr)
    # exponential moving average of G's weights (OASIS' --EMA_decay; 0 = off): kept beside G,
    # checkpointed, and what export, synthesize, evaluate and the studio use when present
    ema_decay: float = 0.0
    # the decay grows as (1 + step) / (10 + step) up to ema_decay, so that short runs are not
    # averaged with their initial weights (OASIS has no warm-up: false reproduces it)
    ema_warmup: bool = True
    ema_stat_batches: int = 50  # training batches that refresh the averaged G's BN statistics
    niter: int = 50  # --niter: epochs at constant lr
    niter_decay: int = 0  # --niter_decay: epochs of linear decay to 0 after niter
    d_steps_per_g: int = 1  # --D_steps_per_G
    seed: int = 0  # seeds weights, noise and data order
    precision: Precision = Precision.FLOAT32  # dtype policy (mixed precision on GPUs)
    jit_compile: bool = False  # XLA; set explicitly (Keras' "auto" differs between CPU and GPU)
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism (slower)
    checkpoint_every: int = 500  # steps between checkpoints (also at every epoch end)
    keep_checkpoints: int = 3  # checkpoints kept on disk
    log_every: int = 50  # steps between TensorBoard scalars
    sample_every: int = 500  # steps between sample grids (PNG and TensorBoard)
    max_steps: Optional[int] = None  # stop after this many steps in all (default: all epochs)
    max_minutes: Optional[float] = None  # stop (with a checkpoint) after this long

    def __post_init__(self) -> None:
        _coerce_enums(self, "train")
        for name in ("checkpoint_every", "keep_checkpoints", "log_every", "sample_every"):
            _require(getattr(self, name) >= 1, f"train.{name}", getattr(self, name), "must be >= 1")
        for name in ("batch_size", "d_steps_per_g"):
            _require(getattr(self, name) >= 1, f"train.{name}", getattr(self, name), "must be >= 1")
        _require(self.lr > 0, "train.lr", self.lr, "must be > 0")
        for name in ("lr_g", "lr_d"):
            v = getattr(self, name)
            _require(v is None or v > 0, f"train.{name}", v, "must be > 0 (or null)")
        _require(0.0 <= self.ema_decay < 1.0, "train.ema_decay", self.ema_decay,
                 "must be in [0, 1) (0 = no averaged generator)")
        _require(self.ema_stat_batches >= 0, "train.ema_stat_batches", self.ema_stat_batches,
                 "must be >= 0")
        _require(self.niter >= 0 and self.niter_decay >= 0, "train.niter/niter_decay",
                 (self.niter, self.niter_decay), "must be >= 0")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Serving export (TF Serving layout ``BASE/NAME/VERSION``)."""

    name: str = "spade"  # model name in the Serving layout
    version: int = 1  # integer version folder


@dataclasses.dataclass(frozen=True)
class PerfConfig:
    """How the networks compute, not what: every form gives the same numbers to float rounding
    (tests/test_kernels.py, tests/test_performance.py), and checkpoints are the same whichever
    is chosen. Not part of a model: layers take it as one ``perf`` argument that their
    ``get_config`` leaves out, like Keras' ``flash_attention``.

    ``auto`` (every default) is resolved per device by ``spade_tf.perf.resolve_perf``: on a CPU
    the forms measured faster there (docs/performance.md), on a GPU and under XLA the plain
    forms (cuDNN convolutions, standard gradients) until a GPU benchmark shows otherwise."""

    # SPADE's first conv on the one-hot map: dense, gather (TFLite builtins) or segment_sum
    # (one fused lookup; becomes gather under train.jit_compile: XLA has no SparseSegmentSum)
    label_conv: LabelConv = LabelConv.AUTO
    fuse_gamma_beta: Toggle = Toggle.AUTO  # each SPADE's gamma and beta convs as one conv with 2C outputs
    # resize the label map once per resolution, and run the first convs of all SPADE layers at
    # one resolution as one conv (their kernels concatenated)
    share_label_features: Toggle = Toggle.AUTO
    # conv gradients: swapped = the kernel gradient as a batch/channel-swapped conv and, where
    # measured faster, the input gradient as a conv with the flipped kernel
    filter_gradient: FilterGradient = FilterGradient.AUTO
    # hand-written training gradients for the norms and SPADE's modulation + leaky ReLU
    closed_form_gradients: Toggle = Toggle.AUTO
    # D's first conv as two (label channels, image channels): no gradient for the label map,
    # and the label part computed once for D's fake and real halves (the same map)
    split_discriminator_input: Toggle = Toggle.AUTO
    # inference: each SPADE layer's label branch runs when its input is ready, one layer at a
    # time and unfused, as in the reference's eager order (the peak memory)
    sequential_inference: Toggle = Toggle.AUTO
    # SPADE's gamma/beta convs only near label boundaries, one value per class inside uniform
    # regions (off under train.jit_compile: XLA needs static shapes; the TFLite graph is dense)
    uniform_regions: Toggle = Toggle.AUTO
    # inference batch norm as x * rstd - mean * rstd instead of (x - mean) * rstd: quantizes
    # right in full-integer TFLite graphs (the export turns it on there; auto: off elsewhere)
    affine_inference_norm: Toggle = Toggle.AUTO
    # CLADE's per-class gamma/beta: argmax + gather (the reference's form; TFLite builtins) or a
    # 1x1 conv of the one-hot map (one matmul); the same numbers for one-hot maps
    clade_lookup: CladeLookup = CladeLookup.AUTO
    # OASIS: SPADE's first conv reads the noise apart from the label map: a per-image noise
    # vector on a 3x3 map (its border and interior outputs), the label map by label_conv's
    # lookups; the reference concatenates both at full size for one dense conv
    broadcast_noise: Toggle = Toggle.AUTO
    # the generator's 2x nearest upsampling as one RESIZE_NEAREST_NEIGHBOR (legacy index, the
    # same pixels) instead of two repeats, whose rank-5 TFLite ops the GPU delegate does not
    # take; the GPU TFLite graph turns it on (auto: off, the repeats, until it is measured)
    resize_upsampling: Toggle = Toggle.AUTO

    def __post_init__(self) -> None:
        _coerce_enums(self, "perf")

    def resolved(self) -> bool:
        """Whether no field is ``auto`` any more."""
        return all(getattr(self, f.name).value != "auto" for f in dataclasses.fields(self))


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run: every section, resolved."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    perf: PerfConfig = dataclasses.field(default_factory=PerfConfig)


_SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


# --------------------------------------------------------------------------- validation helpers


def _require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ValueError(f"{key}={value!r} {why}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce_enums(obj: Any, section: str) -> None:
    """Turns enum fields given as strings into members (frozen: via object.__setattr__)."""
    for name, tp in _field_types(type(obj)).items():
        if isinstance(tp, type) and issubclass(tp, StrEnum):
            object.__setattr__(obj, name, tp.parse(getattr(obj, name), f"{section}.{name}"))


class _RawOverride(str):
    """The text of a ``key=value`` override, interpreted by the field's type in _check_value."""


def _check_value(tp: Any, value: Any, where: str) -> Any:
    """Validates (and lightly coerces) one YAML value against a dataclass field type."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, _RawOverride) and value.strip() in ("", "null", "~")):
            return None
        return _check_value(args[0], value, where)
    if isinstance(value, _RawOverride):
        if tp is str or (isinstance(tp, type) and issubclass(tp, StrEnum)):
            value = str(value).strip()  # paths and names as typed (e.g. "{split}_img")
        else:
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise ValueError(f"{where}: cannot parse {str(value)!r}: {e}") from None
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        return tp.parse(value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported field type {tp!r}")  # pragma: no cover - programming error


def _unknown_key(key: str, allowed: list[str], where: str) -> ValueError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"{where}: unknown key {key!r}{hint}; allowed keys: {', '.join(sorted(allowed))}")


# --------------------------------------------------------------------------- dict <-> Config


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Plain-YAML form of a config (enums as their string values)."""
    out: dict[str, dict[str, Any]] = {}
    for section in dataclasses.fields(Config):
        sec = getattr(config, section.name)
        out[section.name] = {
            f.name: (bool(v) if isinstance(v, Toggle) and v is not Toggle.AUTO
                     else v.value if isinstance(v, StrEnum) else v)
            for f in dataclasses.fields(sec)
            for v in [getattr(sec, f.name)]
        }
    return out


def merge_into(config: Config, updates: Mapping[str, Any], where: str = "config") -> Config:
    """Returns ``config`` with the nested ``updates`` applied, strictly validated."""
    if not isinstance(updates, Mapping):
        raise ValueError(f"{where}: expected a mapping of sections, got {type(updates).__name__}")
    sections = {}
    for sec_name, sec_updates in updates.items():
        if sec_name not in _SECTIONS:
            raise _unknown_key(sec_name, list(_SECTIONS), where)
        if sec_updates is None:
            continue
        if not isinstance(sec_updates, Mapping):
            raise ValueError(f"{where}: section {sec_name!r} must be a mapping, got {sec_updates!r}")
        sec_obj = getattr(config, sec_name)
        types = _field_types(type(sec_obj))
        values = {}
        for key, value in sec_updates.items():
            if key not in types:
                raise _unknown_key(f"{sec_name}.{key}", [f"{sec_name}.{k}" for k in types], where)
            values[key] = _check_value(types[key], value, f"{where}: {sec_name}.{key}")
        try:
            sections[sec_name] = dataclasses.replace(sec_obj, **values)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return dataclasses.replace(config, **sections)


def parse_override(text: str) -> dict[str, dict[str, Any]]:
    """``'model.base_filters=32'`` -> ``{'model': {'base_filters': '32'}}``.

    The value stays text until it meets its field: string fields take it as typed, other fields
    parse it as YAML (``32``, ``1e-3``, ``true``, ``null``).
    """
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected section.key=value, e.g. model.base_filters=32")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"override {text!r}: the key must be section.key, e.g. train.batch_size")
    return {parts[0]: {parts[1]: _RawOverride(raw)}}


# --------------------------------------------------------------------------- files


def configs_dir() -> Path:
    """Folder of the named presets (the repo's ``configs/``, shipped as ``spade_tf.configs``)."""
    env = os.environ.get("SPADE_TF_CONFIGS")
    if env:
        return Path(env)
    from importlib import resources

    return Path(str(resources.files("spade_tf.configs")))


def preset_names() -> list[str]:
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


def _resolve(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        return p
    candidate = configs_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ValueError(f"unknown config {str(name_or_path)!r}: not a file, and not one of the presets "
                     f"({', '.join(preset_names())})")


def _load_file(path: Path, seen: tuple[Path, ...]) -> Config:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    base = raw.pop("base", None)
    config = Config()
    if base is not None:
        base_path = _resolve(base if not str(base).endswith((".yaml", ".yml"))
                             else path.parent / str(base))
        if base_path.resolve() in seen:
            raise ValueError(f"{path}: 'base' chain loops back to {base_path}")
        config = _load_file(base_path, seen + (base_path.resolve(),))
    return merge_into(config, raw, where=str(path))


def load_config(name_or_path: str | os.PathLike | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Loads a preset by name (``ade20k``, ``tiny``, ...) or a YAML file, then applies overrides.

    A YAML file may start from another one with ``base: NAME_OR_PATH``.
    """
    config = Config() if name_or_path is None else _load_file(_resolve(name_or_path), ())
    return apply_overrides(config, overrides)


def apply_overrides(config: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Applies ``section.key=value`` overrides together (validated once, after all of them)."""
    if not overrides:
        return config
    merged: dict[str, dict[str, Any]] = {}
    for text in overrides:
        for section, values in parse_override(text).items():
            merged.setdefault(section, {}).update(values)
    where = "override " + ", ".join(repr(t) for t in overrides)
    return merge_into(config, merged, where=where)


def save_config(config: Config, path: str | os.PathLike, footer: str = "") -> Path:
    """Writes the resolved config as YAML, atomically (temporary file, then rename).

    ``footer``: comment lines appended (e.g. ``spade_tf.perf.describe_perf``'s: how ``auto``
    was resolved on the machine that wrote the file; comments are not read back)."""
    from spade_tf.fileio import atomic_write_text

    text = "# Resolved spade-tf config (every field).\n" + yaml.safe_dump(
        config_to_dict(config), sort_keys=False) + footer
    return atomic_write_text(path, text)
