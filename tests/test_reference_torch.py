"""The PyTorch transcription of the official networks (spade_tf.reference_torch), which the
side-by-side benchmark times as "the official code", against fixture A made by the official
code: if it computed something else, its timings would be of something else."""

import importlib.util
import json

import pytest

from conftest import FIXTURES, run_python

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                reason="torch is not installed (the 'torch' extra)")

# In its own process, as the benchmark runs it (torch and TensorFlow do not share one).
SCRIPT = r"""
import json, sys
import numpy as np, torch
from spade_tf.reference_torch import (MultiscaleDiscriminator, SPADEGenerator, Trainer,
                                      discriminator_losses, generator_losses, load_state)
fx = dict(np.load(sys.argv[1]))
o = json.loads(str(fx["meta"]))["opt"]
state = {}
for k, v in fx.items():
    if k.startswith("sd/"):
        _, net, key = k.split("/", 2)
        state.setdefault(net, {})[key] = v
G = SPADEGenerator(o["semantic_nc"], o["ngf"], o["crop_size"])
D = MultiscaleDiscriminator(o["semantic_nc"] + 3, o["ndf"], o["num_D"])
load_state({"netG": G, "netD": D}, state)
seg = torch.from_numpy(fx["in/semantics"].astype(np.float32))
real = torch.from_numpy(fx["in/image"])
err = {}
def cmp(name, ours, ref):
    err[name] = float(np.max(np.abs(ours.detach().numpy() - ref)) / (np.max(np.abs(ref)) + 1e-12))
acts = {}
for name in ("fc", "head_0", "up_0"):
    getattr(G, name).register_forward_hook(lambda m, i, out, n=name: acts.__setitem__(n, out))
G.head_0.norm_0.register_forward_hook(lambda m, i, out: acts.__setitem__("head_0.norm_0", out))
G.conv_img.register_forward_hook(lambda m, i, out: acts.__setitem__("conv_img", out))
G.eval(); D.eval()
with torch.no_grad():
    fake = G(seg)
    cmp("out/fake_eval", fake, fx["out/fake_eval"])
    for k, v in acts.items():
        cmp("act/" + k, v, fx["act/" + k])
    pred = D(torch.cat([torch.cat([seg, fake], 1), torch.cat([seg, real], 1)], 0))
    for i, scale in enumerate(pred):
        for j, t in enumerate(scale):
            cmp(f"d/fake/{i}/{j}", t[:2], fx[f"d/fake/{i}/{j}"])
            cmp(f"d/real/{i}/{j}", t[2:], fx[f"d/real/{i}/{j}"])
    losses = {**generator_losses(D, seg, fake, real), **discriminator_losses(D, seg, fake, real)}
    for k, v in losses.items():
        cmp("loss/" + k, v, fx["loss/" + k])
G.train()
with torch.no_grad():
    cmp("out/fake_train", G(seg), fx["out/fake_train"])
# a training iteration in bf16 autocast keeps float32 weights and moves them
before = G.fc.weight.detach().clone()
steps = [Trainer(G, D, autocast=dtype).step(seg, real) for dtype in (None, torch.bfloat16)]
print(json.dumps({"err": err, "steps": steps, "moved": float((G.fc.weight - before).abs().max()),
                  "dtypes": sorted({str(p.dtype) for p in [*G.parameters(), *D.parameters()]})}))
"""


def test_transcription_computes_what_the_official_code_computed(fix_a):
    r = run_python(SCRIPT.replace("sys.argv[1]", repr(str(FIXTURES / "spade_fixA_normal.npz"))))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    err = out["err"]
    # every output the fixture has: G (eval and train), its sub-modules, D's 2 x 5 outputs, 4 losses
    assert len(err) == 1 + 5 + 20 + 4 + 1, sorted(err)
    # float32 rounding: torch picks its conv algorithm by load and threads (2e-5 seen under a
    # busy suite); a wrong layer is off by orders of magnitude more
    bad = {k: v for k, v in err.items() if not v < 1e-4}
    assert not bad, bad
    for step in out["steps"]:
        assert all(v == v and abs(v) < 1e4 for v in step.values()), step
    assert out["moved"] > 0
    assert out["dtypes"] == ["torch.float32"]
