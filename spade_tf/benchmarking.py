"""What the benchmark scripts share: timing, process memory and the machine's description.

Memory is reported two ways (docs/performance.md): the peak RSS as a user's process has it
(``peak_rss_gb``), and the model's own memory, that peak minus the RSS right after the
framework's import (``current_rss_gb`` read then), which leaves out the framework's code and
import-time state that every process of it carries.
"""

from __future__ import annotations

import os
import platform
import statistics
import time


def median_seconds(fn, repeats: int, inputs=None) -> tuple[float, list[float]]:
    """Median seconds of ``repeats`` calls after one warm-up call (tracing, allocation), and
    the times. ``inputs``: a list; call i gets item i (cycling; a callable item is called first,
    before the clock starts)."""
    items = inputs if inputs is not None else [None]

    def one(i):
        x = items[i % len(items)]
        x = x() if callable(x) else x
        t = time.perf_counter()
        fn() if inputs is None else fn(x)
        return time.perf_counter() - t

    one(0)
    times = [one(i) for i in range(repeats)]
    return statistics.median(times), times


def _status_kb(field: str):
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_gb() -> float:
    """This process's peak RSS (GB, as ``/usr/bin/time -v`` reports it)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def current_rss_gb():
    """This process's RSS now (GB; Linux), or None."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1e6


def reset_peak() -> bool:
    """Resets the kernel's peak-RSS mark (Linux), so that a steady-state peak can be read apart
    from a one-time cost such as tracing; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_since_reset_gb():
    """The peak RSS since ``reset_peak`` (VmHWM, GB), or None."""
    kb = _status_kb("VmHWM")
    return None if kb is None else kb / 1e6


def machine_info() -> dict:
    """The machine and library versions, for a benchmark's header."""
    import keras
    import numpy as np
    import tensorflow as tf

    from spade_tf.perf import current_device
    from spade_tf.tf_internals import onednn_enabled

    cpu, flags = "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    # the widest vector unit: machines of the same name differ (AVX2 and AVX-512 EPYCs), and
    # TensorFlow's kernels (oneDNN on or off) follow it
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "unknown"
    onednn = "on" if onednn_enabled() else "off"
    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    return {"machine": platform.machine(), "cpu": cpu, "isa": isa, "cores": os.cpu_count(),
            "device": current_device().value,
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__,
            "onednn": f"{onednn} (TF_ENABLE_ONEDNN_OPTS={setting})" if setting else
                      f"{onednn} (TF_ENABLE_ONEDNN_OPTS unset: this CPU's default)",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


# --------------------------------------------------------------------------- phone-sized models

def blocky_labels(rng, n: int, h: int, w: int, classes: int, block: int = 16):
    """``n`` label maps [n, h, w] of ``block``-sized squares of random classes (int32)."""
    import numpy as np

    lab = np.kron(rng.integers(0, classes, (n, -(-h // block), -(-w // block))),
                  np.ones((block, block), np.int64))[:, :h, :w]
    return lab.astype(np.int32)


def inputs_for(config, rng, n: int) -> list:
    """``n`` TFLite input dicts (batch 1) of blocky label (and instance) maps for ``config``."""
    h, w = config.model.output_hw
    label = blocky_labels(rng, n, h, w, config.model.num_classes)
    out = [{"label": label[i:i + 1]} for i in range(n)]
    if config.model.use_instance:
        inst = blocky_labels(rng, n, h, w, 4, 32)
        for i, x in enumerate(out):
            x["instance"] = inst[i:i + 1]
    return out


def prepared_generator(config, rng, checkpoint=None):
    """(generator, config, weights note) for the mobile benchmarks: a trained ``checkpoint``'s,
    or initial weights with their batch-norm statistics run in on blocky maps and CLADE's
    tables drawn wider (gamma U[0.5, 2), beta N(0, 0.5^2): their own init, gamma U[0, 1) and
    beta 0, shrinks every block to near-zero outputs), so that quantization has a signal."""
    import numpy as np

    from spade_tf.networks import build_networks, load_networks
    from spade_tf.semantics import to_semantics

    if checkpoint:
        nets, config = load_networks(checkpoint, discriminator=False)
        return nets.generator, config, "trained"
    g = build_networks(config, discriminator=False, encoder=False, seed=0).generator
    for v in g.trainable_variables:
        if v.path.endswith("gamma_table"):
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype(np.float32))
        elif v.path.endswith("beta_table"):
            v.assign(rng.normal(0.0, 0.5, v.shape).astype(np.float32))
    for x in inputs_for(config, rng, 4):  # batch-norm statistics of these weights
        sem = to_semantics(x["label"], x.get("instance"), config=config)
        for _ in range(10):
            g(sem, training=True)
    return g, config, "initial weights, statistics run in"


def command_line(script: str, parser, args, leave_out=("json", "markdown")) -> str:
    """The command that reruns a benchmark: ``script`` with the options of ``args`` that differ
    from ``parser``'s defaults (flags bare, values shell-quoted), less ``leave_out``."""
    import shlex

    parts = [script]
    for key, value in vars(args).items():
        if not value or key in leave_out or value == parser.get_default(key):
            continue
        parts.append(f"--{key.replace('_', '-')}"
                     + ("" if value is True else f" {shlex.quote(str(value))}"))
    return " ".join(parts)


def write_results(result: dict, text: str, json_path=None, markdown_path=None) -> None:
    """Print a benchmark's markdown, and write it and its JSON where asked (atomically)."""
    import json

    from spade_tf.fileio import atomic_write_text

    print(text)
    if json_path:
        atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
    if markdown_path:
        atomic_write_text(markdown_path, text)
