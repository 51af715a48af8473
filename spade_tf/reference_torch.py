"""The official SPADE networks and training iteration in PyTorch, to time beside ours.

The official code (NVlabs/SPADE) cannot be fetched on the machines we benchmark on, so this is a
transcription of what it computes, written from ``../shared/reference/spade-architecture.md``
with the modules the official code uses, in its order: ``nn.Conv2d`` with
``torch.nn.utils.spectral_norm`` hooks, ``BatchNorm2d(affine=False)`` (what its
SynchronizedBatchNorm2d runs on one device), legacy ``F.interpolate(mode="nearest")``,
``nn.Upsample(scale_factor=2)``, ``InstanceNorm2d`` in D, the hinge and feature-matching losses
and Adam with TTUR. Its module and parameter names are the official ``state_dict`` keys, so the
parity fixtures (made by running the official code) load into it as they are:
tests/test_reference_torch.py checks every output of fixture A against it, in eval and train
mode, so the timings are of the official computation and not of a look-alike.

Only the default SPADE configuration is covered (``spectralspadesyncbatch3x3``, no VAE, hinge
loss, feature matching on, no VGG: the official VGG loss calls ``.cuda()`` and cannot run on a
CPU). This module needs PyTorch (``pip install 'spade-tf[torch]'``); nothing in spade-tf
imports it except the benchmark scripts and its test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


def _lrelu(x):
    return F.leaky_relu(x, 0.2)


class SPADE(nn.Module):
    """normalization.py ``SPADE``: BatchNorm(affine=False), then ``* (1 + gamma) + beta`` from
    a 128-channel shared conv of the label map resized (legacy nearest) to x's size."""

    def __init__(self, norm_nc: int, label_nc: int, nhidden: int = 128):
        super().__init__()
        self.param_free_norm = nn.BatchNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, nhidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(nhidden, norm_nc, 3, padding=1)
        self.mlp_beta = nn.Conv2d(nhidden, norm_nc, 3, padding=1)

    def forward(self, x, segmap):
        normalized = self.param_free_norm(x)
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """architecture.py ``SPADEResnetBlock``: spectral-norm convs, learned shortcut iff
    fin != fout (no activation between norm_s and conv_s)."""

    def __init__(self, fin: int, fout: int, label_nc: int):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmiddle, 3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(fmiddle, fout, 3, padding=1))
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False))
        self.norm_0 = SPADE(fin, label_nc)
        self.norm_1 = SPADE(fmiddle, label_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc)

    def forward(self, x, seg):
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(_lrelu(self.norm_0(x, seg)))
        dx = self.conv_1(_lrelu(self.norm_1(dx, seg)))
        return x_s + dx


class SPADEGenerator(nn.Module):
    """generator.py ``SPADEGenerator`` with ``--num_upsampling_layers normal``, no VAE.

    Args:
        semantic_nc: label channels (``--label_nc`` + dontcare + instance edge).
        ngf: ``--ngf``.
        crop_size: ``--crop_size`` (square output, ``--aspect_ratio 1``).
    """

    def __init__(self, semantic_nc: int, ngf: int = 64, crop_size: int = 256):
        super().__init__()
        nf = ngf
        self.sw = self.sh = crop_size // 2 ** 5
        self.fc = nn.Conv2d(semantic_nc, 16 * nf, 3, padding=1)
        self.head_0 = SPADEResnetBlock(16 * nf, 16 * nf, semantic_nc)
        self.G_middle_0 = SPADEResnetBlock(16 * nf, 16 * nf, semantic_nc)
        self.G_middle_1 = SPADEResnetBlock(16 * nf, 16 * nf, semantic_nc)
        self.up_0 = SPADEResnetBlock(16 * nf, 8 * nf, semantic_nc)
        self.up_1 = SPADEResnetBlock(8 * nf, 4 * nf, semantic_nc)
        self.up_2 = SPADEResnetBlock(4 * nf, 2 * nf, semantic_nc)
        self.up_3 = SPADEResnetBlock(2 * nf, 1 * nf, semantic_nc)
        self.conv_img = nn.Conv2d(nf, 3, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, seg):
        x = self.fc(F.interpolate(seg, size=(self.sh, self.sw)))
        x = self.head_0(x, seg)
        x = self.up(x)
        x = self.G_middle_0(x, seg)
        x = self.G_middle_1(x, seg)
        for block in (self.up_0, self.up_1, self.up_2, self.up_3):
            x = block(self.up(x), seg)
        return torch.tanh(self.conv_img(_lrelu(x)))


class NLayerDiscriminator(nn.Module):
    """discriminator.py ``NLayerDiscriminator`` (``--n_layers_D 4``, ``spectralinstance``):
    returns the four LReLU features and the patch logits."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 4):
        super().__init__()
        kw, pad = 4, 2
        layers = [[nn.Conv2d(input_nc, ndf, kw, stride=2, padding=pad), nn.LeakyReLU(0.2)]]
        nf = ndf
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            conv = spectral_norm(nn.Conv2d(nf_prev, nf, kw, stride=stride, padding=pad, bias=False))
            layers.append([nn.Sequential(conv, nn.InstanceNorm2d(nf, affine=False)),
                           nn.LeakyReLU(0.2)])
        layers.append([nn.Conv2d(nf, 1, kw, stride=1, padding=pad)])
        for n, layer in enumerate(layers):
            self.add_module(f"model{n}", nn.Sequential(*layer))

    def forward(self, x):
        out = []
        for module in self.children():
            x = module(x)
            out.append(x)
        return out


class MultiscaleDiscriminator(nn.Module):
    """discriminator.py ``MultiscaleDiscriminator`` (``--num_D 2``): scale i+1 sees scale i's
    input average-pooled (3x3, stride 2, borders average valid pixels only)."""

    def __init__(self, input_nc: int, ndf: int = 64, num_d: int = 2):
        super().__init__()
        for i in range(num_d):
            self.add_module(f"discriminator_{i}", NLayerDiscriminator(input_nc, ndf))

    def forward(self, x):
        out = []
        for d in self.children():
            out.append(d(x))
            x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
        return out


def _discriminate(netD, seg, fake, real):
    """pix2pix_model.py ``discriminate``: fake and real in one batch, fake first."""
    pred = netD(torch.cat([torch.cat([seg, fake], 1), torch.cat([seg, real], 1)], 0))
    half = fake.shape[0]
    return ([[t[:half] for t in scale] for scale in pred],
            [[t[half:] for t in scale] for scale in pred])


def generator_losses(netD, seg, fake, real, lambda_feat: float = 10.0) -> dict:
    """The G step's losses: hinge ``GAN`` and feature matching ``GAN_Feat``."""
    pred_fake, pred_real = _discriminate(netD, seg, fake, real)
    num_d = len(pred_fake)
    gan = sum(-scale[-1].mean() for scale in pred_fake) / num_d
    feat = sum(F.l1_loss(f, r.detach()) for pf, pr in zip(pred_fake, pred_real)
               for f, r in zip(pf[:-1], pr[:-1])) * lambda_feat / num_d
    return {"GAN": gan, "GAN_Feat": feat}


def discriminator_losses(netD, seg, fake, real) -> dict:
    """The D step's hinge losses ``D_Fake`` and ``D_real``."""
    pred_fake, pred_real = _discriminate(netD, seg, fake.detach(), real)
    num_d = len(pred_fake)
    return {"D_Fake": sum(F.relu(1 + s[-1]).mean() for s in pred_fake) / num_d,
            "D_real": sum(F.relu(1 - s[-1]).mean() for s in pred_real) / num_d}


class Trainer:
    """pix2pix_trainer.py's iteration: a G step, then a D step on a fake regenerated by the
    updated G (no grad); Adam with TTUR (G lr/2, D 2 lr, betas (0, 0.9)).

    Args:
        netG, netD: the networks (train mode is set here).
        lr: ``--lr``.
        autocast: a dtype (``torch.bfloat16``) to run the forwards and losses under
            ``torch.autocast("cpu", dtype)``, as a user of the official code would; None: fp32.
    """

    def __init__(self, netG, netD, lr: float = 2e-4, autocast=None):
        self.netG, self.netD, self.autocast = netG.train(), netD.train(), autocast
        self.opt_g = torch.optim.Adam(netG.parameters(), lr=lr / 2, betas=(0.0, 0.9))
        self.opt_d = torch.optim.Adam(netD.parameters(), lr=lr * 2, betas=(0.0, 0.9))

    def _ctx(self):
        return torch.autocast("cpu", dtype=self.autocast, enabled=self.autocast is not None)

    def step(self, seg, real) -> dict:
        self.opt_g.zero_grad()
        with self._ctx():
            g = generator_losses(self.netD, seg, self.netG(seg), real)
        sum(g.values()).backward()
        self.opt_g.step()
        self.opt_d.zero_grad()
        with self._ctx():
            with torch.no_grad():
                fake = self.netG(seg)
            d = discriminator_losses(self.netD, seg, fake, real)
        sum(d.values()).backward()
        self.opt_d.step()
        return {k: float(v) for k, v in {**g, **d}.items()}


def load_state(networks: dict, state: dict) -> None:
    """Loads official ``state_dict`` tensors (numpy, keyed as the official code keys them) into
    ``{"netG": ..., "netD": ...}``: ``state[name][key]``, e.g. a parity fixture's ``sd/`` arrays."""
    for name, net in networks.items():
        net.load_state_dict({k: torch.from_numpy(v) for k, v in state[name].items()}, strict=True)
