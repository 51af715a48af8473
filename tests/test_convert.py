"""Official checkpoint import: strict key/shape checks, options mapping, the CLI."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import nchw_to_nhwc, run_python
from spade_tf.convert import (OfficialCheckpointError, config_from_official, from_official,
                              parse_opt_file)
from spade_tf.networks import load_networks


def test_a_renamed_key_is_reported_by_name(fix_a):
    config = config_from_official(fix_a.meta["opt"])
    g = dict(fix_a.state["netG"])
    g["head_0.conv_0.weight_orig_renamed"] = g.pop("head_0.conv_0.weight_orig")
    with pytest.raises(OfficialCheckpointError) as e:
        from_official({"netG": g}, config)
    msg = str(e.value)
    assert "netG: 1 missing key(s): head_0.conv_0.weight_orig" in msg
    assert "netG: 1 unexpected key(s): head_0.conv_0.weight_orig_renamed" in msg


def test_label_nc_off_by_one_names_the_keys_and_shapes(fix_a):
    opt = dict(fix_a.meta["opt"], label_nc=6, semantic_nc=6)
    with pytest.raises(OfficialCheckpointError) as e:
        from_official(fix_a.state, config_from_official(opt))
    msg = str(e.value)
    assert "shape mismatch for fc.weight: checkpoint (32, 5, 3, 3), model (32, 6, 3, 3)" in msg
    assert "head_0.norm_0.mlp_shared.0.weight" in msg
    assert "netD: shape mismatch for discriminator_0.model0.0.weight" in msg
    assert "label_nc" in msg and "has 5 channels" in msg


def test_encoder_without_vae_and_unknown_nets_are_errors(fix_c):
    config = config_from_official(dict(fix_c.meta["opt"], use_vae=False))
    with pytest.raises(OfficialCheckpointError, match="use_vae"):
        from_official({"netE": fix_c.state["netE"]}, config)
    with pytest.raises(OfficialCheckpointError, match="netX"):
        from_official({"netX": {}}, config)


def test_subset_import_leaves_the_others_none(fix_c):
    nets = from_official({"netE": fix_c.state["netE"]}, config_from_official(fix_c.meta["opt"]))
    assert nets.generator is None and nets.discriminator is None and nets.encoder is not None


def test_config_from_official_maps_names_and_norm_strings():
    c = config_from_official({"label_nc": "35", "no_instance": "False", "ngf": 32,
                              "norm_G": "spadeinstance5x5", "norm_D": "spectralsyncbatch",
                              "norm_E": "spectral", "dataset_mode": "coco", "no_TTUR": True,
                              "num_upsampling_layers": "more", "gpu_ids": "0"})
    m = c.model
    assert (m.num_classes, m.use_instance, m.base_filters) == (35, True, 32)
    assert (m.generator_spectral, m.spade_norm.value, m.spade_kernel_size) == (False, "instance", 5)
    assert (m.disc_spectral, m.disc_norm.value) == (True, "sync_batch")
    assert (m.encoder_spectral, m.encoder_norm.value) == (True, "none")
    assert c.data.dataset.value == "coco_stuff" and c.train.ttur is False
    with pytest.raises(ValueError, match="semantic_nc=99"):
        config_from_official({"label_nc": 5, "no_instance": True, "semantic_nc": 99})
    with pytest.raises(ValueError, match="norm_G='spectralbatch3x3'"):
        config_from_official({"norm_G": "spectralbatch3x3"})


def test_parse_opt_file(tmp_path):
    f = tmp_path / "opt.txt"
    f.write_text("----------------- Options ---------------\n"
                 "                 label_nc: 150                           \t[default: 182]\n"
                 "   contain_dontcare_label: True                          \t[default: False]\n"
                 "                   norm_G: spectralspadesyncbatch3x3     \n"
                 "                 dataroot: ./datasets/ADEChallengeData2016/\n"
                 "----------------- End -------------------\n")
    opts = parse_opt_file(f)
    assert opts["label_nc"] == "150" and opts["contain_dontcare_label"] == "True"
    c = config_from_official(opts)
    assert c.model.num_classes == 150 and c.model.contain_dontcare
    assert c.data.root == "./datasets/ADEChallengeData2016/"


def _write_opt_txt(path, opt):
    lines = ["----------------- Options ---------------"]
    lines += [f"{k:>25}: {str(v):<30}" for k, v in opt.items()]
    lines.append("----------------- End -------------------")
    path.write_text("\n".join(lines) + "\n")


def _check_imported_outputs(out_dir, fx):
    nets, config = load_networks(out_dir)
    from spade_tf.models.spade.encoder import reparameterize
    from spade_tf.semantics import to_semantics

    mu, logvar = nets.encoder(nchw_to_nhwc(fx["in/image"]))
    z = reparameterize(mu, logvar, fx["in/eps"])
    image = nets.generator(to_semantics(fx["in/label"][:, 0], config=config), z=z)
    assert np.max(np.abs(image.numpy() - nchw_to_nhwc(fx["out/fake_eval"]))) <= 1e-4


def test_cli_import_official_from_npz(tmp_path, fix_c):
    from spade_tf.cli import main

    g, e = tmp_path / "G.npz", tmp_path / "E.npz"
    np.savez(g, **fix_c.state["netG"])
    np.savez(e, **fix_c.state["netE"])
    _write_opt_txt(tmp_path / "opt.txt", fix_c.meta["opt"])
    out = tmp_path / "imported"
    args = ["import-official", "--generator", str(g), "--encoder", str(e),
            "--opt-file", str(tmp_path / "opt.txt"), "--out", str(out)]
    assert main(args) == 0
    _check_imported_outputs(out, fix_c)
    assert main(args) == 2  # refuses to overwrite a non-empty folder
    assert main(args + ["--overwrite"]) == 0
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_cli_import_reports_bad_checkpoints(tmp_path, fix_a, capsys):
    from spade_tf.cli import main

    g = dict(fix_a.state["netG"])
    del g["conv_img.bias"]
    np.savez(tmp_path / "G.npz", **g)
    out = tmp_path / "out"
    rc = main(["import-official", "--generator", str(tmp_path / "G.npz"), "--config", "facades",
               "--set", "model.num_classes=5", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "missing key(s): conv_img.bias" in err
    assert not out.exists()  # nothing half-written


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (the 'torch' extra); the .pth path is untested")
def test_cli_import_official_from_pth_files(tmp_path, fix_c):
    # torch writes the .pth files in its own process, as the official code would have.
    np.savez(tmp_path / "G.npz", **fix_c.state["netG"])
    np.savez(tmp_path / "E.npz", **fix_c.state["netE"])
    code = (
        "import numpy as np, torch\n"
        f"for n in ('G', 'E'):\n"
        f"    z = np.load(r'{tmp_path}/' + n + '.npz')\n"
        f"    torch.save({{k: torch.from_numpy(z[k]) for k in z.files}}, r'{tmp_path}/latest_net_' + n + '.pth')\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    _write_opt_txt(tmp_path / "opt.txt", fix_c.meta["opt"])
    out = tmp_path / "imported"
    proc = run_python(
        "from spade_tf.cli import main; import sys; sys.exit(main(["
        f"'import-official', '--generator', r'{tmp_path}/latest_net_G.pth', "
        f"'--encoder', r'{tmp_path}/latest_net_E.pth', '--opt-file', r'{tmp_path}/opt.txt', "
        f"'--out', r'{out}']))")
    assert proc.returncode == 0, proc.stderr
    assert "imported generator: 1,527,909 parameters" in proc.stdout
    _check_imported_outputs(out, fix_c)
