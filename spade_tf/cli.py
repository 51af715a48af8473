"""``spade-tf``: the command line. Every command is a thin wrapper over a library function.

Errors in what the user gave (data, config, inputs, files) end the command with one line on
stderr, naming the file, the field and the value, and exit status 2 (``-v`` adds the
traceback). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback

# Quiet TensorFlow's C++ start-up banner unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    from spade_tf.config import preset_names

    p.add_argument("--config", required=required, metavar="NAME_OR_PATH",
                   help=f"a preset name ({', '.join(preset_names())}) or a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. --set model.num_classes=20 (repeatable)")


def cmd_config(args) -> int:
    import yaml

    from spade_tf.config import config_to_dict, load_config
    from spade_tf.perf import describe_perf

    config = load_config(args.config, args.overrides)
    sys.stdout.write(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    sys.stdout.write(describe_perf(config))
    m = config.model
    print(f"# semantic channels: {m.semantic_channels}; latent (sh, sw): {m.latent_hw}; "
          f"output (H, W): {m.output_hw}")
    return 0


def cmd_import_official(args) -> int:
    from spade_tf.convert import import_official

    nets, cfg, path = import_official(
        args.generator, args.out, discriminator=args.discriminator, encoder=args.encoder,
        ema=args.ema, opt_file=args.opt_file, config=args.config, overrides=args.overrides,
        overwrite=args.overwrite)
    for name, n in nets.param_counts().items():
        print(f"imported {name}: {n:,} parameters")
    m = cfg.model
    print(f"config: {m.num_classes} classes, semantic channels {m.semantic_channels}, "
          f"output {m.output_hw[0]}x{m.output_hw[1]}, ngf {m.base_filters}, vae {m.use_vae}")
    print(f"wrote {path}")
    return 0


def cmd_prepare_data(args) -> int:
    from spade_tf.config import load_config
    from spade_tf.data.records import prepare_data

    config = load_config(args.config, args.overrides)
    for split in args.split:
        out = prepare_data(config, split, args.out, num_shards=args.shards,
                           overwrite=args.overwrite)
        print(f"wrote {out}")
    return 0


def cmd_synthscapes(args) -> int:
    from spade_tf.data.synthscapes import write_dataset

    for split, count in (("train", args.train), ("val", args.val)):
        if count:
            write_dataset(args.out, split, count, args.size, dataset_seed=args.seed)
    print(f"wrote synthscapes to {args.out} (custom layout). Train on it with:\n"
          f"  --config synthscapes --set data.dataset=custom --set data.root={args.out} "
          f"--set data.image_dir={{split}}_img --set data.label_dir={{split}}_label "
          f"--set data.instance_dir={{split}}_inst")
    return 0


def cmd_preview(args) -> int:
    from spade_tf.config import load_config
    from spade_tf.data.preview import dataset_sheet

    config = load_config(args.config, args.overrides)
    out = dataset_sheet(config, args.split, args.out, count=args.count, columns=args.columns,
                        source=args.source)
    print(f"wrote {out}")
    return 0


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def without_workers_flag(argv: list[str]) -> list[str]:
    """``argv`` without ``--workers N`` / ``--workers=N`` (what each worker is started with)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers="):
            out.append(a)
    return out


def launch_local_workers(argv: list[str], workers: int, env=None) -> int:
    """Starts ``workers`` processes of ``spade-tf train`` on this machine, each with a TF_CONFIG
    for a MultiWorkerMirroredStrategy cluster on 127.0.0.1; returns the worst exit code."""
    import json
    import subprocess

    ports = _free_ports(workers)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(workers):
        worker_env = dict(os.environ if env is None else env)
        worker_env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen([sys.executable, "-m", "spade_tf", *argv], env=worker_env))
    codes = []
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(__import__("signal").SIGINT)
        codes = [p.wait() for p in procs]
    return max(codes, key=abs)


def cmd_train(args) -> int:
    import json

    from spade_tf.config import load_config

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    config = load_config(args.config, overrides)
    if args.workers and args.workers > 1:
        return launch_local_workers(without_workers_flag(args.argv), args.workers)
    if args.dry_run:
        from spade_tf.data.pipeline import steps_per_epoch
        from spade_tf.networks import build_networks

        spe = steps_per_epoch(config, "train")
        counts = build_networks(config).param_counts()
        t = config.train
        print(f"config resolved; {spe} steps per epoch at batch {t.batch_size}; "
              f"{t.niter + t.niter_decay} epochs = {spe * (t.niter + t.niter_decay)} steps"
              + (f" (stopping at {t.max_steps})" if t.max_steps else ""))
        for name, n in counts.items():
            print(f"{name}: {n:,} parameters")
        print("dry run: nothing trained")
        return 0
    from spade_tf.training import train

    strategy, chief = None, True
    if os.environ.get("TF_CONFIG"):
        import tensorflow as tf

        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
        chief = task.get("index", 0) == 0
    result = train(config, args.workdir, strategy=strategy, resume_from=args.resume_from,
                   command=["spade-tf", *args.argv], chief=chief,
                   verbose=(1 if sys.stdout.isatty() else 2) if chief else 0)
    if result.interrupted:
        return 143 if result.interrupted == "SIGTERM" else 130
    return 0


def cmd_train_segmenter(args) -> int:
    from spade_tf.config import load_config
    from spade_tf.segmenter import train_segmenter

    config = load_config(args.config, args.overrides)
    info = train_segmenter(config, args.out, steps=args.steps, batch_size=args.batch_size,
                           width=args.width, seed=args.seed, overwrite=args.overwrite,
                           progress=not args.quiet)
    c = info["ceiling_on_real_val"]
    print(f"segmenter: {args.out} ({info['steps']} steps, {info['train_seconds']:.0f} s); on real "
          f"val images: mIoU {c['miou']:.4f}, pixel accuracy {c['pixel_accuracy']:.4f} (the ceiling)")
    return 0


def cmd_evaluate(args) -> int:
    from spade_tf.evaluation import evaluate

    r = evaluate(args.checkpoint, args.out, segmenter=args.segmenter, extractor=args.extractor,
                 inception_weights=args.inception_weights, overrides=args.overrides,
                 split=args.split, batch_size=args.batch_size, max_images=args.max_images,
                 progress=not args.quiet, weights=args.weights)
    print(f"evaluated {r['images']} {r['split']} images of {args.checkpoint} ({r['weights']})")
    if "segmentation" in r:
        g, c = r["segmentation"]["generated"], r["segmentation"]["real_ceiling"]
        print(f"  mIoU {g['miou']:.4f} (real images: {c['miou']:.4f}), pixel accuracy "
              f"{g['pixel_accuracy']:.4f} (real: {c['pixel_accuracy']:.4f}); segmenter {r['segmenter']}")
    if "kid" in r:
        print(f"  KID {r['kid']['mean']:.5f} ± {r['kid']['std']:.5f}, FID {r['fid']:.3f}; "
              f"features: {r['extractor']}")
    for note in r["notes"]:
        print(f"  note: {note}")
    print(f"  report: {args.out}/report.html, {args.out}/metrics.json")
    return 0


def cmd_inspect(args) -> int:
    import json

    from spade_tf.tflite_compat import format_report, inspect_tflite

    result = inspect_tflite(args.file)
    print(json.dumps(result, indent=1) if args.json else format_report(result, args.file))
    s = result["summary"]
    return 1 if args.strict and s["gpu_delegate_ops"] < s["ops"] else 0


def cmd_export(args) -> int:
    import json

    from spade_tf.export import export_generator

    variants = [v for v in (args.tflite or "").split(",") if v]
    if args.web and "int8" not in variants:
        variants.append("int8")  # the phone page's model
    result = export_generator(args.checkpoint, args.out, name=args.name, version=args.version,
                              tflite=variants, keep_perf=args.perf, precision=args.precision)
    rep = result.report
    print(f"SavedModel: {result.version_dir} ({rep['saved_model_bytes'] / 1e6:.1f} MB, "
          f"signatures {', '.join(rep['signatures'])}, {rep['saved_model_perf']['forms']} "
          f"perf forms, {rep['saved_model_seconds']} s)")
    if rep.get("precision_reason"):
        print(f"  precision {rep['precision']} ({rep['precision_reason']})")
    if rep["precision"] == "bf16":
        db = rep["psnr_db_vs_fp32"]
        print(f"  bf16: {'identical to' if db is None else f'{db} dB PSNR from'} fp32 (max "
              f"{rep['max_abs_levels_vs_fp32']} levels) on {rep['maps']} maps "
              f"({rep['bf16_check_source']}); {rep['bf16_hardware']}")
    for variant, entry in rep["tflite"].items():
        if "refused" in entry:
            print(f"TFLite {variant}: REFUSED: {entry['refused']}")
            continue
        where = result.tflite.get(variant, "(reference only, not requested)")
        psnr = entry.get("psnr_db_vs_fp32", entry["psnr_db_vs_keras"])
        print(f"TFLite {variant}: {where} ({entry['bytes'] / 1e6:.2f} MB; max "
              f"{entry['max_abs_levels_vs_keras']} levels off Keras, PSNR "
              f"{'identical' if psnr is None else f'{psnr} dB'} on {rep['tflite_parity_maps']} maps;"
              f" {entry['graph']} graph: the GPU delegate's rules take {entry['gpu_delegate_ops']} "
              f"of {entry['ops']} ops, XNNPACK took {entry['xnnpack_ops']})")
    if args.web:
        from spade_tf.studio.web import export_web

        # the int8 file (XNNPACK's fastest on phones' CPUs), else the smallest one written
        pick = next((v for v in ("int8", "dynamic_int8", "fp16", "fp32") if v in result.tflite), None)
        if pick is None:
            raise ValueError("--web: no .tflite was written to put in the page")
        if pick != "int8":
            print(f"web: full int8 was refused (see above); the page takes {pick} instead")
        web = export_web(result.tflite[pick], args.web, name=rep["name"], compat=args.web_compat,
                         overwrite=args.overwrite_web)
        print(f"web: {web['out']} ({web['bytes'] / 1e6:.1f} MB, {pick}, LiteRT.js "
              f"{web['litertjs']}): serve it with any static server, e.g. python3 -m http.server "
              f"-d {web['out']} 8000; its README.txt says which headers give two threads")
    if args.json:
        print(json.dumps(rep, indent=2))
    return 0


def cmd_synthesize(args) -> int:
    from spade_tf.synthesize import synthesize

    res = synthesize(args.model, args.labels, args.out, instances=args.instance, style=args.style,
                     seed=args.seed, num_samples=args.num_samples,
                     progress=None if args.quiet else print)
    print(f"wrote {len(res['images'])} image(s) and {res['sheet']}")
    return 0


def cmd_request(args) -> int:
    import json

    from spade_tf import serving_client as sc
    from spade_tf.data.io import read_index_map
    from spade_tf.fileio import atomic_path, atomic_write_text

    if args.decode:
        try:
            body = json.loads(open(args.decode).read())
        except (OSError, ValueError) as e:
            raise ValueError(f"{args.decode}: not a JSON answer: {e}") from None
        out = args.out or "."
        os.makedirs(out, exist_ok=True)
        for i, png in enumerate(sc.decode_rest_response(body)):
            with atomic_path(os.path.join(out, f"image_{i}.png")) as tmp:
                tmp.write_bytes(png)
            print(os.path.join(out, f"image_{i}.png"))
        return 0
    if not args.label:
        raise ValueError("give --label PNG ... (to build a request) or --decode ANSWER.json")
    labels = [sc.encode_label_png(read_index_map(p, p)) for p in args.label]
    insts = [sc.encode_instance_png(read_index_map(p, p)) for p in args.instance] if args.instance else None
    if insts is not None and len(insts) != len(labels):
        raise ValueError(f"{len(labels)} --label but {len(insts)} --instance files")
    seeds = [args.seed + i for i in range(len(labels))] if args.seed is not None else None
    if args.rest_out:
        atomic_write_text(args.rest_out, json.dumps(sc.rest_body(labels, insts, seeds)) + "\n")
        print(f"REST body: {args.rest_out}  (POST it to http://HOST:8501/v1/models/{args.model}:predict)")
    if args.grpc_out:
        req = sc.grpc_request(args.model, labels, insts, seeds)
        with atomic_path(args.grpc_out) as tmp:
            tmp.write_bytes(req.SerializeToString())
        print(f"gRPC PredictRequest: {args.grpc_out}")
    if not (args.rest_out or args.grpc_out):
        raise ValueError("give --rest-out FILE.json and/or --grpc-out FILE.pb")
    return 0


def cmd_pack(args) -> int:
    from pathlib import Path

    from spade_tf.packaging import pack

    card = pack(args.checkpoint, args.out, segmenter=args.segmenter, command=args.train_command,
                minutes=args.minutes, steps=args.steps, overwrite=args.overwrite,
                progress=not args.quiet)
    s = card["scores"]
    print(f"packed {args.checkpoint} -> {args.out} ({card['packed_bytes'] / 1e6:.1f} MB, "
          f"{card['steps']} steps): held-out mIoU {s['miou']:.4f} (real images "
          f"{s['ceiling_miou']:.4f}), KID {s['kid']:.3f}; card: {Path(args.out) / 'card.md'}")
    return 0


def cmd_studio(args) -> int:
    import errno

    from spade_tf.studio import start_studio
    from spade_tf.studio.server import LOCAL_HOSTS

    if args.port < 0 or args.port > 65535:
        raise ValueError(f"--port {args.port}: must be 0..65535")
    if args.max_body_mb <= 0:
        raise ValueError(f"--max-body-mb {args.max_body_mb}: must be positive")
    model = args.model
    if model is None and not args.serving_url:
        model = "pretrained"  # the packaged model: a fresh install has something to paint with
    try:
        server = start_studio(model, serving_url=args.serving_url, host=args.host,
                              port=args.port, max_body=int(args.max_body_mb * 2**20))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ValueError(f"--port {args.port}: already in use on {args.host}; pick "
                             f"another (--port 0: any free one)") from None
        raise
    if args.host not in LOCAL_HOSTS:
        print(f"spade-tf studio: warning: listening on {args.host}: the studio has no "
              f"authentication; anyone who can reach this address can use the model",
              file=sys.stderr)
    b = server.backend
    print(f"studio: {b.name} ({server.info['width']}x{server.info['height']}, "
          f"{len(server.info['classes'])} classes) from {server.info['backend']}")
    print(f"open {server.url}   (Ctrl+C stops it)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("studio: stopped")
    finally:
        server.server_close()
    return 0


# the commands that build models (and import TensorFlow): --release-library-pages acts on them
MODEL_COMMANDS = frozenset({"import-official", "train", "train-segmenter", "evaluate", "export",
                            "synthesize", "studio", "pack"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spade-tf",
        description="SPADE / GauGAN semantic image synthesis in TensorFlow / Keras "
                    "(number for number with NVlabs/SPADE).")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="more logging, and the full traceback of an error")
    parser.add_argument("--low-memory", action="store_true",
                        help="return freed tensor memory to the system at once (glibc): a lower "
                             "peak RSS (ade20k inference: 1.00 instead of 1.11 GB), but more page "
                             "faults (that forward 1-23%% slower in our runs); put it before the "
                             "command")
    parser.add_argument("--release-library-pages", action="store_true",
                        help="unmap the clean pages of TensorFlow's shared libraries that its "
                             "import touched (the kernel reads them back if needed). It frees no "
                             "memory a tensor can use; it lowers the process's peak RSS by about "
                             "0.27 GB (ade20k), which matters only where RSS itself is limited; "
                             "put it before the command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("config", help="print a resolved config (preset or file plus overrides)",
                       description="Print the fully resolved config as YAML.")
    _add_config_args(p, required=False)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "import-official", help="convert official NVlabs/SPADE, CLADE or OASIS .pth checkpoints",
        description="Convert official NVlabs/SPADE checkpoints (latest_net_G.pth, _D, _E), "
                    "tzt101/CLADE's, or boschresearch/OASIS' (best_net_G.pth, _D, _EMA; its "
                    "opt.txt gives an OASIS config) into a "
                    "spade-tf checkpoint folder. .pth files are read with "
                    "torch.load(weights_only=True) and need the 'torch' extra; .npz files with "
                    "the same keys need nothing. Every missing, unexpected or mis-shaped key is "
                    "reported at once.",
        epilog="example: spade-tf import-official --generator ckpt/ade20k/latest_net_G.pth "
               "--opt-file ckpt/ade20k/opt.txt --out runs/ade20k_official")
    p.add_argument("--generator", metavar="G.pth", help="the official generator state dict")
    p.add_argument("--discriminator", metavar="D.pth", help="the official discriminator state dict")
    p.add_argument("--encoder", metavar="E.pth", help="the official encoder state dict (VAE models)")
    p.add_argument("--ema", metavar="EMA.pth",
                   help="OASIS' averaged generator (best_net_EMA.pth): what export and "
                        "synthesize then run")
    p.add_argument("--opt-file", metavar="opt.txt",
                   help="the official opt.txt of the checkpoint (maps its options to our config)")
    _add_config_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output checkpoint folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty --out")
    p.set_defaults(func=cmd_import_official)

    p = sub.add_parser(
        "train", help="train (or resume) a model with model.fit",
        description="Train SPADE. Re-running the same command resumes at the next step from "
                    "the latest checkpoint in --workdir (SIGTERM / Ctrl-C save one first). Under "
                    "TF_CONFIG it runs as a MultiWorkerMirroredStrategy worker (worker 0 writes).",
        epilog="example: spade-tf train --config synthscapes --workdir runs/synth --max-minutes 10")
    _add_config_args(p, required=True)
    p.add_argument("--workdir", required=True, metavar="DIR", help="the run folder")
    p.add_argument("--resume-from", metavar="CKPT", help="a checkpoint prefix instead of the latest")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N steps in all")
    p.add_argument("--max-minutes", type=float, metavar="M", help="stop (with a checkpoint) after M minutes")
    p.add_argument("--workers", type=int, metavar="N",
                   help="start N local workers (MultiWorkerMirroredStrategy on 127.0.0.1)")
    p.add_argument("--dry-run", action="store_true",
                   help="resolve the config, check the data and build the networks; do not train")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "prepare-data", help="pack a folder dataset into sharded TFRecord files",
        description="Pack a dataset in its official folder layout into sharded TFRecords "
                    "(the original file bytes, checked pairing). Read them back with "
                    "build_dataset(..., source=OUT).")
    _add_config_args(p, required=True)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (one sub-folder per split)")
    p.add_argument("--split", nargs="+", default=["train", "val"], choices=["train", "val"])
    p.add_argument("--shards", type=int, default=None, help="number of shard files (default: by size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing prepared split")
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser(
        "synthscapes", help="write the built-in synthscapes dataset to disk",
        description="Render synthscapes pairs (photo, label, instance map) into the custom "
                    "folder layout ({split}_img, {split}_label, {split}_inst). Training does "
                    "not need this: --config synthscapes generates them on the fly.")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--train", type=int, default=2000, help="train pairs (default 2000)")
    p.add_argument("--val", type=int, default=200, help="val pairs (default 200)")
    p.add_argument("--size", type=int, default=128, help="square size in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.set_defaults(func=cmd_synthscapes)

    p = sub.add_parser(
        "preview", help="contact sheet of a dataset: colourised labels beside photos",
        description="Write a PNG grid of [colourised label | photo] for the first examples of a "
                    "split, as the input pipeline yields them (evaluation preprocessing).")
    _add_config_args(p, required=True)
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--out", required=True, metavar="PNG")
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--columns", type=int, default=4)
    p.add_argument("--source", default=None,
                   help="a prepare-data folder or tfds:NAME instead of the folders")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser(
        "train-segmenter", help="train the built-in segmenter on a dataset's real images",
        description="Train the small built-in segmentation network on the real training images "
                    "of a dataset (synthscapes by default), for the segmentation-accuracy metric "
                    "of `evaluate`. Prints its mIoU on real validation images: the ceiling.",
        epilog="example: spade-tf train-segmenter --config quickstart --out runs/segmenter")
    _add_config_args(p, required=True)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    p.add_argument("--batch-size", type=int, default=8, help="default 8")
    p.add_argument("--width", type=int, default=16, help="channels at full resolution (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train_segmenter)

    p = sub.add_parser(
        "evaluate", help="FID/KID and segmentation mIoU of a checkpoint, with a report",
        description="Generate the validation split from a checkpoint and score it: segmentation "
                    "accuracy and mIoU against the input labels (with --segmenter), KID and FID "
                    "(InceptionV3 with --inception-weights, or a named stand-in extractor). "
                    "Writes metrics.json, report.html and report.png to --out. The protocol is "
                    "in the spade_tf.evaluation docstring and the README.",
        epilog="example: spade-tf evaluate --checkpoint runs/quickstart --segmenter "
               "runs/segmenter --out runs/quickstart/eval")
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="training run or checkpoint folder (pretrained: the packaged model)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--segmenter", metavar="DIR",
                   help="built-in segmenter folder or a segmentation SavedModel (default for a "
                        "packed model: the segmenter/ it ships)")
    p.add_argument("--inception-weights", metavar="FILE",
                   help="local InceptionV3 (no top) weights, e.g. "
                        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
    p.add_argument("--extractor", metavar="KIND_OR_PATH",
                   help="inception, segmenter (the built-in segmenter's features) or a feature "
                        "SavedModel; default: inception with --inception-weights, else segmenter")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of the checkpoint, e.g. data.root=...")
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--weights", default="auto", choices=["auto", "generator", "ema"],
                   help="which generator: auto = the moving average when the checkpoint has "
                        "one (train.ema_decay > 0), else G; generator / ema to compare them")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-images", type=int, metavar="N", help="evaluate the first N images only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    from spade_tf.precision import cpu_bf16

    p = sub.add_parser(
        "export", help="SavedModel for TF Serving (+ TFLite files) from a checkpoint",
        description="Export the generator of a checkpoint (a training run folder or a "
                    "checkpoint folder) to BASE/NAME/VERSION/ (TF Serving layout, with warm-up "
                    "requests) and BASE/NAME/VERSION-tflite/. Every TFLite variant is checked "
                    "against the Keras model on 16 training label maps; full int8 is written "
                    "only if it stays within 30 dB PSNR of fp32, otherwise refused with the numbers.",
        epilog="example: spade-tf export --checkpoint runs/quickstart --out export/models "
               "--tflite fp32,fp16,dynamic_int8")
    p.add_argument("--checkpoint", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="BASE", help="Serving base folder")
    p.add_argument("--name", help="model name (default: the config's export.name)")
    p.add_argument("--version", type=int, help="integer version (default: the next free one)")
    p.add_argument("--tflite", default="fp32,fp16,dynamic_int8", metavar="LIST",
                   help="comma-separated from fp32, fp16, dynamic_int8, int8; empty for none "
                        "(default fp32,fp16,dynamic_int8)")
    p.add_argument("--perf", action="store_true",
                   help="trace the SavedModel with this machine's perf forms (faster on a "
                        "machine like this one, in fp32; a bf16 SavedModel always gets the "
                        "plain forms); default: the plain forms, which suit any Serving "
                        "machine, a GPU included (the report records which)")
    p.add_argument("--web", metavar="DIR",
                   help="also write a static page for phones to DIR: paint a label map and the "
                        "int8 model draws it in the browser (LiteRT.js), offline after the first "
                        "visit; any static host serves it")
    p.add_argument("--web-compat", action="store_true",
                   help="with --web: also ship the runtime build for browsers without relaxed "
                        "SIMD (+9.6 MB)")
    p.add_argument("--overwrite-web", action="store_true", help="with --web: replace DIR")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="the SavedModel's arithmetic. bf16: convs and matmuls in bfloat16, "
                        "weights frozen as constants: 1.7-4.9x faster where the hardware "
                        "multiplies it natively (AMX CPUs, GPUs from Ampere on), slower "
                        "elsewhere, and more memory to load for large models (ade20k: 5.4 GB "
                        "against 0.8 GB); checked against fp32 on 16 validation maps and refused "
                        "below 40 dB PSNR. auto (default): bf16 on a CPU with AMX, where it "
                        "was measured, when the model keeps 40 dB; else fp32 (GPUs and "
                        "AVX512-BF16 CPUs are not measured: pass bf16 there to choose it; this "
                        f"machine: {cpu_bf16().what}). Export with fp32 when the model will be "
                        "served on a machine without native bf16. The TFLite files are unaffected")
    p.add_argument("--json", action="store_true", help="also print the export report")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "synthesize", help="images from label maps, with a checkpoint, SavedModel or .tflite",
        description="Synthesize images from a label map (PNG of class ids, or .npy) or a folder "
                    "of them. Writes one PNG per map and sample, and sheet.png (colourised "
                    "label | samples).",
        epilog="example: spade-tf synthesize --model export/models/spade --labels "
               "data/val_label --out runs/samples --num-samples 3")
    p.add_argument("--model", default="pretrained", metavar="PATH",
                   help="checkpoint folder, SavedModel folder, Serving model folder or .tflite "
                        "(default: pretrained, the model shipped in the package)")
    p.add_argument("--labels", required=True, metavar="FILE_OR_DIR")
    p.add_argument("--instance", metavar="FILE_OR_DIR", help="matching instance map(s)")
    p.add_argument("--style", metavar="IMAGE", help="style image (VAE models)")
    p.add_argument("--seed", type=int, default=0, help="latent seed (VAE models; default 0)")
    p.add_argument("--num-samples", type=int, default=1, help="samples per map (VAE models)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser(
        "pack", help="pack a trained run into a shippable model folder with its card",
        description="Write the generator that inference runs (the moving average, statistics "
                    "refreshed) as float16, a copy of the segmenter that scores it, and a card "
                    "(command, steps, minutes, mIoU, KID, samples) measured on the packed "
                    "weights. The folder loads wherever a checkpoint does; in "
                    "spade_tf/pretrained/ it ships in the package (scripts/"
                    "train_packaged_model.sh).",
        epilog="example: spade-tf pack --checkpoint runs/packaged --segmenter runs/segmenter "
               "--out spade_tf/pretrained/synthscapes_light --minutes 60")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="the training run")
    p.add_argument("--segmenter", required=True, metavar="DIR",
                   help="a built-in segmenter folder (spade-tf train-segmenter): it scores the "
                        "card and ships beside the weights")
    p.add_argument("--out", required=True, metavar="DIR", help="the model folder to write")
    p.add_argument("--train-command", default="", metavar="CMD",
                   help="the command that trained the run, for the card")
    p.add_argument("--minutes", type=float, help="the training's wall-clock minutes, for the card")
    p.add_argument("--steps", type=int,
                   help="the training steps, for the card (default: the run's steps.log)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser(
        "inspect", help="which ops of a .tflite the mobile GPU delegate and XNNPACK take",
        description="List every op of a .tflite file with whether the TFLite GPU delegate "
                    "takes it, by the rules of tensorflow/lite/tools/versioning/"
                    "gpu_compatibility.cc (and its 4-D tensor limit), and whether XNNPACK took "
                    "it when LiteRT loaded the file here. An op outside the GPU delegate's "
                    "rules runs on the phone's CPU, splitting the graph. TensorFlow's own "
                    "Analyzer(gpu_compatibility=True) reports nothing for these files.",
        epilog="example: spade-tf inspect export/models/spade/1-tflite/spade_fp16.tflite --strict")
    p.add_argument("file", metavar="FILE.tflite")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any op falls outside the GPU delegate's rules")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "request", help="build TF Serving requests (REST JSON, gRPC) or decode an answer",
        description="Build a REST JSON body and/or a serialized gRPC PredictRequest for the "
                    "'png' signature from label PNGs, or decode a REST answer into PNGs.",
        epilog="example: spade-tf request --label a.png --rest-out body.json && curl -d "
               "@body.json http://localhost:8501/v1/models/spade:predict > answer.json && "
               "spade-tf request --decode answer.json --out images/")
    p.add_argument("--label", nargs="+", metavar="PNG")
    p.add_argument("--instance", nargs="+", metavar="PNG")
    p.add_argument("--seed", type=int, help="latent seed of the first map (VAE models)")
    p.add_argument("--model", default="spade", help="model name for gRPC / the URL (default spade)")
    p.add_argument("--rest-out", metavar="JSON")
    p.add_argument("--grpc-out", metavar="PB")
    p.add_argument("--decode", metavar="ANSWER_JSON", help="a REST answer to turn into PNGs")
    p.add_argument("--out", metavar="DIR", help="where decoded PNGs go (default .)")
    p.set_defaults(func=cmd_request)

    p = sub.add_parser(
        "studio", help="paint a label map in the browser and watch the model draw it",
        description="Start a local web studio: paint a label map with brush, fill and\n"
                    "rectangle tools in the model's palette, and see the generated image after\n"
                    "each stroke. The page speaks TensorFlow Serving's REST format, so it also\n"
                    "works in front of a Serving deployment (--serving-url). Details:\n"
                    "docs/studio.md.",
        epilog="examples:\n"
               "  spade-tf studio                     (the model shipped in the package)\n"
               "  spade-tf studio --model export/models/spade/1\n"
               "  spade-tf studio --model export/models/spade/1-tflite/spade_int8.tflite --port 8080\n"
               "  spade-tf studio --model export/models/spade/1 "
               "--serving-url http://localhost:8501/v1/models/spade",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="PATH",
                   help="what synthesize accepts: a SavedModel version folder, a Serving model "
                        "folder, a .tflite file or a training run folder (default: pretrained, "
                        "the model shipped in the package). With --serving-url: the export "
                        "deployed there (only its config is read: size, classes)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, this machine only; the studio has "
                        "no authentication)")
    p.add_argument("--serving-url", metavar="URL",
                   help="forward predictions to TensorFlow Serving's REST API, e.g. "
                        "http://localhost:8501/v1/models/spade, instead of loading the model")
    p.add_argument("--max-body-mb", type=float, default=16.0,
                   help="largest request body accepted, in MB (default 16; 413 above)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(func=cmd_studio)
    return parser


def _user_error_types() -> tuple:
    """Exceptions that mean bad input (data, config, files), not a bug. TensorFlow's op errors
    count when they carry one of ours from inside a tf.data or py_function step."""
    types = [ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
             IsADirectoryError, PermissionError, ImportError, FloatingPointError]
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        types.append(tf.errors.OpError)
    return tuple(types)


ERROR_LINE_CHARS = 600  # an error line longer than this is cut (the allowed keys of a section)
_INNER_ERROR = re.compile(r"(?:DataError|ValueError|InvalidArgumentError|FileNotFoundError)"
                          r":\s*(.+)")


def error_line(e: BaseException) -> str | None:
    """The one line to show for a user error, or None when ``e`` is not one. A TensorFlow
    op error is shown by the message of ours that it wraps (a tf.data step's DataError, a
    label id checked in the graph), without TensorFlow's traceback text around it."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(e, tf.errors.OpError):
        text = e.message or str(e)
        inner = [m.group(1).strip() for m in _INNER_ERROR.finditer(text)]
        ours = [t for t in inner if not t.startswith(("{{", "Traceback"))]
        if not ours:
            return None
        line = ours[-1]
    else:
        line = str(e).strip() or type(e).__name__
    # one line: a multi-line message (e.g. a list of files) joined, and cut if very long
    line = " ".join(x.strip() for x in line.splitlines() if x.strip()) or type(e).__name__
    return line if len(line) <= ERROR_LINE_CHARS else line[:ERROR_LINE_CHARS] + " ... (-v: all)"


def import_tensorflow_quietly(verbose: bool = False) -> None:
    """Imports TensorFlow with its start-up banner held back.

    TensorFlow writes several lines to stderr at import (absl's "log messages before
    InitializeLog", oneDNN's "custom operations are on") whatever TF_CPP_MIN_LOG_LEVEL says.
    They would bury a command's own one-line errors, so stderr (file descriptor 2: C++ writes
    there directly) goes to a temporary file during the import. ``verbose`` writes it back,
    and so does a failed import."""
    if "tensorflow" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            import tensorflow  # noqa: F401
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if verbose or failed:
                held.seek(0)
                sys.stderr.write(held.read().decode("utf-8", "replace"))


def main(argv=None) -> int:
    """Runs ``spade-tf`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import_tensorflow_quietly(args.verbose)  # every command imports it, sooner or later
    if args.low_memory:
        from spade_tf.memory import release_freed_memory

        if not release_freed_memory():
            print("spade-tf: --low-memory needs glibc's malloc (Linux); it has no effect here",
                  file=sys.stderr)
    if args.command in MODEL_COMMANDS and args.release_library_pages:
        import keras  # noqa: F401  (the imports whose pages are released)
        import tensorflow  # noqa: F401

        from spade_tf.memory import release_library_pages

        released = release_library_pages()
        logging.getLogger("spade_tf").info("unmapped %.2f GB of library pages", released / 1e9)
    try:
        return args.func(args)
    except _user_error_types() as e:
        line = error_line(e)
        if line is None:
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"spade-tf {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
