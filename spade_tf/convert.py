"""Import of official NVlabs/SPADE checkpoints (and options) into spade-tf networks.

The official ``latest_net_G.pth`` / ``_D`` / ``_E`` files are PyTorch state dicts; their keys are
listed in ``shared/reference/state_dict_manifest.txt``. Layouts change on the way in: conv
weights OIHW -> HWIO, Linear (out, in) -> Dense (in, out). Spectral-norm convs keep
``weight_orig`` as our ``kernel_orig`` and their ``weight_u`` / ``weight_v`` vectors as is, so
training continues exactly where the official run stopped. BN running statistics are imported;
``num_batches_tracked`` is accepted and ignored (with a fixed momentum, PyTorch does not use it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from spade_tf.config import Config, merge_into
from spade_tf.layers import SpectralConv2D, TorchBatchNorm, TorchConv2D
from spade_tf.models.oasis import OASISDiscriminator, OASISGenerator
from spade_tf.networks import SPADENetworks, build_networks, save_networks
from spade_tf.weights import read_state_dict, read_torch_state_dict  # noqa: F401 (public here too)

log = logging.getLogger(__name__)

CONV, DENSE, VEC, TABLE = "conv", "dense", "vec", "table"
# netEMA: OASIS' moving average of G (its best_net_EMA.pth / latest_net_EMA.pth)
NET_KEYS = {"netG": "generator", "netD": "discriminator", "netE": "encoder",
            "netEMA": "ema_generator"}


class OfficialCheckpointError(ValueError):
    """A state dict does not fit the networks the config describes."""


@dataclasses.dataclass(frozen=True)
class Entry:
    key: str  # official state_dict key
    variable: Any  # our Keras variable
    kind: str  # CONV | DENSE | VEC


# --------------------------------------------------------------------------- key enumeration


def _conv(prefix: str, layer: TorchConv2D) -> Iterator[Entry]:
    if isinstance(layer, SpectralConv2D):
        yield Entry(f"{prefix}.weight_orig", layer.kernel_orig, CONV)
        yield Entry(f"{prefix}.weight_u", layer.u, VEC)
        yield Entry(f"{prefix}.weight_v", layer.v, VEC)
    else:
        yield Entry(f"{prefix}.weight", layer.kernel, CONV)
    if layer.use_bias:
        yield Entry(f"{prefix}.bias", layer.bias, VEC)


def _dense(prefix: str, layer) -> Iterator[Entry]:
    yield Entry(f"{prefix}.weight", layer.kernel, DENSE)
    yield Entry(f"{prefix}.bias", layer.bias, VEC)


def _norm(prefix: str, layer) -> Iterator[Entry]:
    if isinstance(layer, TorchBatchNorm):
        if layer.affine:
            yield Entry(f"{prefix}.weight", layer.gamma, VEC)
            yield Entry(f"{prefix}.bias", layer.beta, VEC)
        yield Entry(f"{prefix}.running_mean", layer.moving_mean, VEC)
        yield Entry(f"{prefix}.running_var", layer.moving_variance, VEC)
    # InstanceNorm(affine=False) has no state.


def _optional_keys(entries: list[Entry]) -> set[str]:
    """``num_batches_tracked`` beside every running_mean: accepted, not required."""
    return {e.key[: -len("running_mean")] + "num_batches_tracked"
            for e in entries if e.key.endswith(".running_mean")}


def _spade(prefix: str, spade, norm_name="param_free_norm") -> Iterator[Entry]:
    # OASIS' SPADE calls its parameter-free norm first_norm
    yield from _norm(f"{prefix}.{norm_name}", spade.param_free_norm)
    yield from _conv(f"{prefix}.mlp_shared.0", spade.mlp_shared)
    yield from _conv(f"{prefix}.mlp_gamma", spade.mlp_gamma)
    yield from _conv(f"{prefix}.mlp_beta", spade.mlp_beta)


def _clade(prefix: str, norm) -> Iterator[Entry]:
    # tzt101/CLADE's SPADELight: param_free_norm, class_specified_affine (ClassAffine: the
    # [classes, C] tables as weight / bias, ICPE's dist_conv_w / dist_conv_b), inst_conv
    yield from _norm(f"{prefix}.param_free_norm", norm.param_free_norm)
    yield Entry(f"{prefix}.class_specified_affine.weight", norm.gamma_table, TABLE)
    yield Entry(f"{prefix}.class_specified_affine.bias", norm.beta_table, TABLE)
    if norm.positional:
        for name in ("dist_conv_w", "dist_conv_b"):
            conv = getattr(norm, name)
            yield Entry(f"{prefix}.class_specified_affine.{name}.weight", conv.kernel, CONV)
            yield Entry(f"{prefix}.class_specified_affine.{name}.bias", conv.bias, VEC)
    if norm.use_instance:
        yield from _conv(f"{prefix}.inst_conv", norm.inst_conv)
    if norm.noise_channels:  # OASIS with CLADE (ours; no official counterpart)
        yield from _conv(f"{prefix}.noise_conv", norm.noise_conv)


def _resblock(prefix: str, block, spade_norm_name="param_free_norm") -> Iterator[Entry]:
    yield from _conv(f"{prefix}.conv_0", block.conv_0)
    yield from _conv(f"{prefix}.conv_1", block.conv_1)
    if block.learned_shortcut:
        yield from _conv(f"{prefix}.conv_s", block.conv_s)
    for name in ("norm_0", "norm_1") + (("norm_s",) if block.learned_shortcut else ()):
        if block.modulation == "clade":
            yield from _clade(f"{prefix}.{name}", getattr(block, name))
        else:
            yield from _spade(f"{prefix}.{name}", getattr(block, name), spade_norm_name)


def generator_entries(g) -> list[Entry]:
    if isinstance(g, OASISGenerator):
        # boschresearch/OASIS: fc, body.0 ... body.5, conv_img
        out = list(_conv("fc", g.fc))
        for i, block in enumerate(g.blocks):
            out += _resblock(f"body.{i}", block, "first_norm")
        return out + list(_conv("conv_img", g.conv_img))
    out = list(_dense("fc", g.fc) if g.use_vae else _conv("fc", g.fc))
    for block in g.blocks:
        out += _resblock(block.name, block)
    out += _conv("conv_img", g.conv_img)
    return out


def _oasis_discriminator_entries(d) -> list[Entry]:
    # residual_block_D's nn.Sequential indices: conv1 is [conv] in the first block, [LReLU,
    # conv] going down, [LReLU, Upsample, conv] going up; conv2 is [LReLU, conv]
    out: list[Entry] = []
    for part, blocks in (("body_down", d.down_blocks), ("body_up", d.up_blocks)):
        for i, blk in enumerate(blocks):
            j = 0 if blk.first else (2 if blk.direction == "up" else 1)
            out += _conv(f"{part}.{i}.conv1.{j}", blk.conv1)
            out += _conv(f"{part}.{i}.conv2.1", blk.conv2)
            if blk.learned_shortcut:
                out += _conv(f"{part}.{i}.conv_s", blk.conv_s)
    return out + list(_conv("layer_up_last", d.layer_up_last))


def _conv_norm(prefix: str, conv, norm) -> Iterator[Entry]:
    # get_nonspade_norm_layer: the conv alone, or nn.Sequential(conv, norm).
    if norm is None:
        yield from _conv(prefix, conv)
    else:
        yield from _conv(f"{prefix}.0", conv)
        yield from _norm(f"{prefix}.1", norm)


def discriminator_entries(d) -> list[Entry]:
    if isinstance(d, OASISDiscriminator):
        return _oasis_discriminator_entries(d)
    out: list[Entry] = []
    for i, sub in enumerate(d.discriminators):
        last = len(sub.convs) - 1
        for j, (conv, norm) in enumerate(zip(sub.convs, sub.norms)):
            prefix = f"discriminator_{i}.model{j}.0"
            out += _conv(prefix, conv) if j in (0, last) else _conv_norm(prefix, conv, norm)
    return out


def encoder_entries(e) -> list[Entry]:
    out: list[Entry] = []
    for i, (conv, norm) in enumerate(zip(e.convs, e.norms), start=1):
        out += _conv_norm(f"layer{i}", conv, norm)
    out += _dense("fc_mu", e.fc_mu)
    out += _dense("fc_var", e.fc_var)
    return out


_ENTRIES = {"generator": generator_entries, "discriminator": discriminator_entries,
            "encoder": encoder_entries, "ema_generator": generator_entries}


def _to_ours(kind: str, value: np.ndarray) -> np.ndarray:
    if kind == CONV:
        return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    if kind == DENSE:
        return np.transpose(value)  # (out, in) -> (in, out)
    return value


def _to_official(kind: str, value: np.ndarray) -> np.ndarray:
    if kind == CONV:
        return np.transpose(value, (3, 2, 0, 1))
    if kind == DENSE:
        return np.transpose(value)
    return value


def _official_shape(kind: str, shape) -> tuple:
    shape = tuple(int(s) for s in shape)
    if kind == CONV:
        return (shape[3], shape[2], shape[0], shape[1])
    if kind == DENSE:
        return (shape[1], shape[0])
    return shape


# --------------------------------------------------------------------------- import / export


def _format_problems(net: str, missing, unexpected, mismatched) -> list[str]:
    lines = []
    if missing:
        lines.append(f"{net}: {len(missing)} missing key(s): " + ", ".join(sorted(missing)))
    if unexpected:
        lines.append(f"{net}: {len(unexpected)} unexpected key(s): " + ", ".join(sorted(unexpected)))
    for key, got, want in mismatched:
        lines.append(f"{net}: shape mismatch for {key}: checkpoint {got}, model {want}")
    return lines


def _hint(mismatched) -> str:
    for key, got, want in mismatched:
        if key in ("fc.weight", "discriminator_0.model0.0.weight") or key.endswith("mlp_shared.0.weight"):
            if len(got) == 4 and got[0] == want[0]:
                return (f"\nhint: the checkpoint's input has {got[1]} channels where the config gives "
                        f"{want[1]}: check label_nc (model.num_classes), contain_dontcare_label and "
                        f"no_instance (model.use_instance); D adds 3 image channels.")
            if len(got) == 2:
                return ("\nhint: the VAE fc layer differs: check ngf (model.base_filters), crop_size, "
                        "aspect_ratio, num_upsampling_layers and z_dim.")
    if mismatched:
        return ("\nhint: widths differ: check ngf / ndf (model.base_filters / disc_filters), "
                "n_layers_D and the norm options.")
    return ""


def from_official(state: Mapping[str, Mapping[str, np.ndarray]], config: Config) -> SPADENetworks:
    """Builds our networks from an official state (``{"netG": {...}, "netD": ..., "netE": ...}``,
    and OASIS' ``"netEMA"``, its averaged generator, as ``.ema_generator``).

    Any subset of the nets may be given; the others are ``None`` in the result. A missing
    or unexpected key, or a shape mismatch, raises ``OfficialCheckpointError`` listing every
    offending key (of all nets) before anything is returned.
    """
    unknown = set(state) - set(NET_KEYS)
    if unknown:
        raise OfficialCheckpointError(f"unknown net name(s) {sorted(unknown)}; expected any of "
                                      f"{sorted(NET_KEYS)}")
    if "netE" in state and not config.model.use_vae:
        raise OfficialCheckpointError("an encoder (netE) was given but the config has "
                                      "model.use_vae=false (the official option --use_vae)")
    nets = build_networks(config, generator="netG" in state, discriminator="netD" in state,
                          encoder="netE" in state, ema="netEMA" in state)
    problems: list[str] = []
    assignments = []
    mismatched_all = []
    for net_key, attr in NET_KEYS.items():
        if net_key not in state:
            continue
        sd = {k: np.asarray(v) for k, v in state[net_key].items()}
        entries = _ENTRIES[attr](getattr(nets, attr))
        expected = {e.key for e in entries}
        optional = _optional_keys(entries)
        missing = expected - set(sd)
        unexpected = set(sd) - expected - optional
        mismatched = []
        for e in entries:
            if e.key not in sd:
                continue
            want = _official_shape(e.kind, e.variable.shape)
            got = tuple(sd[e.key].shape)
            if got != want:
                mismatched.append((e.key, got, want))
            else:
                assignments.append((e, sd[e.key]))
        mismatched_all += mismatched
        problems += _format_problems(net_key, missing, unexpected, mismatched)
    if problems:
        raise OfficialCheckpointError("the official state dict does not fit the config:\n  "
                                      + "\n  ".join(problems) + _hint(mismatched_all))
    for e, value in assignments:
        e.variable.assign(_to_ours(e.kind, value).astype(np.float32))
    return nets


def to_official(networks: SPADENetworks) -> dict[str, dict[str, np.ndarray]]:
    """Our networks as official state dicts (without ``num_batches_tracked``)."""
    out = {}
    for net_key, attr in NET_KEYS.items():
        model = getattr(networks, attr)
        if model is not None:
            out[net_key] = {e.key: _to_official(e.kind, np.asarray(e.variable.numpy()))
                            for e in _ENTRIES[attr](model)}
    return out


# --------------------------------------------------------------------------- reading files
# (the .pth / .npz readers live in spade_tf.weights, on the ground floor: losses reads VGG19
# weights with them without importing the network stack)


def parse_opt_file(path: str | os.PathLike) -> dict[str, str]:
    """Reads an official ``opt.txt`` (``name: value   [default: x]`` lines) into strings."""
    opts = {}
    for line in Path(path).read_text().splitlines():
        if ":" not in line or line.lstrip().startswith("---"):
            continue
        key, _, rest = line.partition(":")
        value = rest.split("\t[default:")[0].split("[default:")[0].strip()
        opts[key.strip()] = value
    if not opts:
        raise ValueError(f"{path}: no 'name: value' lines found; is this an official opt.txt?")
    return opts


# --------------------------------------------------------------------------- options


def _norm_option(value: str, opt: str, allowed_spade: bool) -> tuple[bool, str, int]:
    """Parses ``spectralspadesyncbatch3x3`` / ``spectralinstance`` -> (spectral, norm, kernel)."""
    s = str(value)
    spectral = s.startswith("spectral")
    rest = s[len("spectral"):] if spectral else s
    kernel = 3
    if allowed_spade:
        if not rest.startswith("spade"):
            raise ValueError(f"{opt}={value!r}: expected spectral?spade<norm><K>x<K>, e.g. "
                             f"spectralspadesyncbatch3x3")
        rest = rest[len("spade"):]
        digits = [i for i, ch in enumerate(rest) if ch.isdigit()]
        if not digits:
            raise ValueError(f"{opt}={value!r}: no kernel size (e.g. 3x3) at the end")
        kernel = int(rest[digits[0]])  # the reference reads the first digit only
        rest = rest[: digits[0]]
    names = {"syncbatch": "sync_batch", "batch": "batch", "instance": "instance", "": "none",
             "none": "none"}
    if rest not in names or (allowed_spade and rest in ("", "none")):
        raise ValueError(f"{opt}={value!r}: unknown norm {rest!r}")
    return spectral, names[rest], kernel


def _as_bool(v) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no", ""):
        return False
    raise ValueError(f"expected a boolean, got {v!r}")


_DATASETS = {"ade20k": "ade20k", "cityscapes": "cityscapes", "coco": "coco_stuff",
             "facades": "facades", "custom": "custom"}

# official option -> (section, field, converter)
_DIRECT = {
    "label_nc": ("model", "num_classes", int),
    "contain_dontcare_label": ("model", "contain_dontcare", _as_bool),
    "no_instance": ("model", "use_instance", lambda v: not _as_bool(v)),
    "crop_size": ("model", "crop_size", int),
    "aspect_ratio": ("model", "aspect_ratio", float),
    "num_upsampling_layers": ("model", "num_upsampling_layers", str),
    "ngf": ("model", "base_filters", int),
    "ndf": ("model", "disc_filters", int),
    "num_D": ("model", "num_discriminators", int),
    "n_layers_D": ("model", "disc_layers", int),
    "use_vae": ("model", "use_vae", _as_bool),
    "z_dim": ("model", "z_dim", int),
    "init_type": ("model", "init_type", str),
    "init_variance": ("model", "init_gain", float),
    "gan_mode": ("loss", "gan_mode", str),
    "no_ganFeat_loss": ("loss", "feature_matching", lambda v: not _as_bool(v)),
    "lambda_feat": ("loss", "lambda_feat", float),
    "lambda_vgg": ("loss", "lambda_vgg", float),
    "lambda_kld": ("loss", "lambda_kld", float),
    "dataset_mode": ("data", "dataset", lambda v: _DATASETS.get(str(v), str(v))),
    "dataroot": ("data", "root", str),
    "label_dir": ("data", "label_dir", str),
    "image_dir": ("data", "image_dir", str),
    "instance_dir": ("data", "instance_dir", str),
    "preprocess_mode": ("data", "preprocess", str),
    "load_size": ("data", "load_size", int),
    "no_flip": ("data", "flip", lambda v: not _as_bool(v)),
    "batchSize": ("train", "batch_size", int),
    "lr": ("train", "lr", float),
    "no_TTUR": ("train", "ttur", lambda v: not _as_bool(v)),
    "beta1": ("train", "beta1", float),
    "beta2": ("train", "beta2", float),
    "niter": ("train", "niter", int),
    "niter_decay": ("train", "niter_decay", int),
    "D_steps_per_G": ("train", "d_steps_per_g", int),
    # tzt101/CLADE's options
    "norm_mode": ("model", "norm_mode", str),
    "add_dist": ("model", "clade_positional", _as_bool),
}
# Options that change nothing we model (logging, paths, devices, display...) or are derived.
_IGNORED = {
    "semantic_nc", "name", "gpu_ids", "checkpoints_dir", "model", "phase", "isTrain", "nThreads",
    "serial_batches", "max_dataset_size", "display_winsize", "display_freq", "print_freq",
    "save_latest_freq", "save_epoch_freq", "no_html", "debug", "tf_log", "continue_train",
    "which_epoch", "load_from_opt_file", "cache_filelist_write", "cache_filelist_read",
    "output_nc", "netG", "netD", "netE", "nef", "no_pairing_check", "results_dir", "how_many",
    "coco_no_portraits", "no_vgg_loss", "netD_subarch", "use_amp", "optimizer", "ntest",
    "total_epochs",
}


# boschresearch/OASIS config.py option -> (section, field, converter)
_OASIS_DIRECT = {
    "label_nc": ("model", "num_classes", int),
    "contain_dontcare_label": ("model", "contain_dontcare", _as_bool),
    "crop_size": ("model", "crop_size", int),
    "aspect_ratio": ("model", "aspect_ratio", float),
    "channels_G": ("model", "base_filters", int),
    # the official D ignores --channels_D (its widths are 64's); ours reads it as the width k
    "channels_D": ("model", "disc_filters", int),
    "z_dim": ("model", "z_dim", int),
    "no_3dnoise": ("model", "noise_3d", lambda v: not _as_bool(v)),
    "num_res_blocks": ("model", "num_res_blocks", int),
    "spade_ks": ("model", "spade_kernel_size", int),
    "param_free_norm": ("model", "spade_norm",
                        lambda v: {"syncbatch": "sync_batch"}.get(str(v), str(v))),
    "no_balancing_inloss": ("loss", "class_balancing", lambda v: not _as_bool(v)),
    "no_labelmix": ("loss", "labelmix", lambda v: not _as_bool(v)),
    "lambda_labelmix": ("loss", "lambda_labelmix", float),
    "lambda_vgg": ("loss", "lambda_vgg", float),
    "dataset_mode": ("data", "dataset", lambda v: _DATASETS.get(str(v), str(v))),
    "dataroot": ("data", "root", str),
    "load_size": ("data", "load_size", int),
    "no_flip": ("data", "flip", lambda v: not _as_bool(v)),
    "batch_size": ("train", "batch_size", int),
    "lr_g": ("train", "lr_g", float),
    "lr_d": ("train", "lr_d", float),
    "beta1": ("train", "beta1", float),
    "beta2": ("train", "beta2", float),
    "num_epochs": ("train", "niter", int),
    "seed": ("train", "seed", int),
}
_OASIS_IGNORED = {
    "semantic_nc", "name", "gpu_ids", "checkpoints_dir", "phase", "freq_print", "freq_save_ckpt",
    "freq_save_latest", "freq_smooth_loss", "freq_save_loss", "freq_fid", "continue_train",
    "which_iter", "loaded_latest_iter", "num_workers", "results_dir", "ckpt_iter",
    "cache_filelist_read", "cache_filelist_write",
}


def _map_direct(name: str, value: Any, table: Mapping, updates: dict) -> bool:
    """Puts ``name=value`` into ``updates`` through ``table`` (option -> section, field,
    converter); False when ``table`` does not have it. An unset path option is skipped."""
    if name not in table:
        return False
    section, field, convert = table[name]
    if value is None or (section == "data" and str(value) in ("", "None")):
        return True
    try:
        updates.setdefault(section, {})[field] = convert(value)
    except ValueError as e:
        raise ValueError(f"official option {name}={value!r}: {e}") from None
    return True


def _finish(options: Mapping[str, Any], updates: dict, unknown: list, base: Config | None,
            where: str, implied_by: str) -> Config:
    """The config of the mapped ``updates``; logs the ``unknown`` options and checks a given
    ``semantic_nc`` against the one the options imply."""
    if unknown:
        log.info("%s not used by spade-tf: %s", where, ", ".join(sorted(unknown)))
    config = merge_into(base or Config(), updates, where=where)
    if "semantic_nc" in options:
        want = int(options["semantic_nc"])
        if want != config.model.semantic_channels:
            raise ValueError(f"{where}: semantic_nc={want}, but {implied_by} give "
                             f"{config.model.semantic_channels}")
    return config


def is_oasis_options(options: Mapping[str, Any]) -> bool:
    """Whether an option dict is boschresearch/OASIS' (its ``config.py``) rather than SPADE's."""
    return any(k in options for k in ("channels_G", "no_3dnoise", "lambda_labelmix", "EMA_decay"))


def _config_from_oasis(options: Mapping[str, Any], base: Config | None) -> Config:
    """OASIS' options: always 3D noise into SPADE, the U-Net D, Adam with OASIS' betas and its
    own lr_g / lr_d (no TTUR), no instance maps; ``no_EMA`` / ``EMA_decay`` give
    ``train.ema_decay``; ``add_vgg_loss`` off gives ``lambda_vgg`` 0."""
    updates: dict[str, dict[str, Any]] = {
        "model": {"generator": "oasis", "use_instance": False, "use_vae": False},
        "train": {"ttur": False, "niter_decay": 0, "ema_warmup": False}}
    unknown = []
    for name, value in options.items():
        if _map_direct(name, value, _OASIS_DIRECT, updates):
            continue
        if name == "no_spectral_norm":
            spectral = not _as_bool(value)
            updates["model"].update(generator_spectral=spectral, disc_spectral=spectral)
        elif name not in _OASIS_IGNORED and name not in ("EMA_decay", "no_EMA", "add_vgg_loss"):
            unknown.append(name)
    if str(options.get("dataset_mode", "")) == "coco":
        # OASIS' COCO-Stuff loader adds 1 to every id (255 wraps to 0, its dontcare): our
        # OASIS layout does that shift for contain_dontcare=false (spade_tf.semantics)
        updates["model"]["contain_dontcare"] = False
    if _as_bool(options.get("no_EMA", False)):
        updates["train"]["ema_decay"] = 0.0
    elif "EMA_decay" in options:
        updates["train"]["ema_decay"] = float(options["EMA_decay"])
    if "add_vgg_loss" in options and not _as_bool(options["add_vgg_loss"]):
        updates.setdefault("loss", {})["lambda_vgg"] = 0.0
    return _finish(options, updates, unknown, base, "OASIS options",
                   "label_nc and contain_dontcare_label")


def config_from_official(options: Mapping[str, Any], base: Config | None = None) -> Config:
    """Maps official option names (``opt.txt``, fixtures' ``meta["opt"]``) to a ``Config``.

    Values may be typed or strings (as read from ``opt.txt``). Options that do not affect what
    we model (paths, logging, devices) are ignored; options we do not know are logged. A given
    ``semantic_nc`` is checked against the one the mapped options imply. boschresearch/OASIS'
    options (``channels_G``, ``z_dim``, ``no_3dnoise``, ``lambda_labelmix``, ``EMA_decay``,
    ``no_EMA``, ...; its ``config.py`` names) give an OASIS config.
    """
    if is_oasis_options(options):
        return _config_from_oasis(options, base)
    updates: dict[str, dict[str, Any]] = {}
    unknown = []
    for name, value in options.items():
        if _map_direct(name, value, _DIRECT, updates):
            continue
        if name in ("norm_G", "norm_D", "norm_E"):
            spectral, norm, kernel = _norm_option(value, name, allowed_spade=name == "norm_G")
            if name == "norm_G":
                updates.setdefault("model", {}).update(generator_spectral=spectral, spade_norm=norm,
                                                       spade_kernel_size=kernel)
            elif name == "norm_D":
                updates.setdefault("model", {}).update(disc_spectral=spectral, disc_norm=norm)
            else:
                updates.setdefault("model", {}).update(encoder_spectral=spectral, encoder_norm=norm)
        elif name not in _IGNORED:
            unknown.append(name)
    return _finish(options, updates, unknown, base, "official options",
                   "label_nc, contain_dontcare_label and no_instance")


def import_official(generator=None, out=None, *, discriminator=None, encoder=None, ema=None,
                    opt_file=None, config=None, overrides=(), overwrite=False):
    """Reads official ``.pth`` (or ``.npz``) state dicts and writes a spade-tf checkpoint
    folder (``spade-tf import-official``).

    Args:
        generator / discriminator / encoder: paths of the official state dicts (any subset).
        ema: OASIS' averaged generator (``best_net_EMA.pth``), imported as ``ema_generator``.
        out: the checkpoint folder to write.
        opt_file: the official ``opt.txt``, mapped to our config; or else
        config: a preset name or YAML file (exactly one of the two), with ``overrides``.
        overwrite: replace an existing, non-empty ``out``.

    Returns ``(networks, config, out_path)``.
    """
    from spade_tf.config import apply_overrides, load_config

    if (opt_file is None) == (config is None):
        raise ValueError("give exactly one of --opt-file (the official opt.txt) or --config")
    if opt_file is not None:
        cfg = apply_overrides(config_from_official(parse_opt_file(opt_file)), overrides)
    else:
        cfg = load_config(config, overrides)
    state = {"netG": read_state_dict(generator)} if generator else {}
    if discriminator:
        state["netD"] = read_state_dict(discriminator)
    if encoder:
        state["netE"] = read_state_dict(encoder)
    if ema:
        state["netEMA"] = read_state_dict(ema)
    if not state:
        raise ValueError("nothing to import: give --generator and/or --discriminator / --encoder")
    nets = from_official(state, cfg)
    path = save_networks(nets, cfg, out, overwrite=overwrite)
    return nets, cfg, path
