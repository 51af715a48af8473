"""Finding (photo, label, instance) triples in the folder layouts the official datasets use.

| preset | photos | labels | instances |
|---|---|---|---|
| ade20k | images/{training,validation}/*.jpg | annotations/{training,validation}/*.png | - |
| cityscapes | leftImg8bit/{train,val}/<city>/*_leftImg8bit.png | gtFine/.../*_gtFine_labelIds.png | gtFine/.../*_gtFine_instanceIds.png (16-bit) |
| coco_stuff | {train,val}_img/*.jpg | {train,val}_label/*.png | {train,val}_inst/*.png |
| facades | {train,val}_img/*.jpg | {train,val}_label/*.png | - |
| custom | data.image_dir | data.label_dir | data.instance_dir |

Paths are relative to ``data.root``. Custom folders may contain ``{split}``. Files pair by stem
(Cityscapes: the name before ``_leftImg8bit`` / ``_gtFine_*``); an unpaired file is an error
listing every one of them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath
from typing import Optional

from spade_tf.config import Config, DatasetPreset
from spade_tf.data.io import DataError

PHOTO_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val")


@dataclasses.dataclass(frozen=True)
class Example:
    stem: str
    image: Path
    label: Path
    instance: Optional[Path] = None


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: allowed values: {', '.join(map(repr, SPLITS))}")
    return split


def _files(folder: Path, exts, suffix: str = "", recursive: bool = False) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"dataset folder not found: {folder}")
    pattern = "**/*" if recursive else "*"
    out = {}
    for p in sorted(folder.glob(pattern)):
        if p.is_file() and p.suffix.lower() in exts and p.name.endswith(suffix + p.suffix):
            stem = p.name[: len(p.name) - len(suffix + p.suffix)]
            if stem in out:
                raise DataError(f"two files with the stem {stem!r}: {out[stem]} and {p}")
            out[stem] = p
    return out


def _layout(config: Config, split: str) -> tuple[Path, Path, Optional[Path], dict]:
    """(photo dir, label dir, instance dir, how to match) for a preset and split."""
    data = config.data
    preset = data.dataset
    if preset is DatasetPreset.CUSTOM:
        if not data.label_dir or not data.image_dir:
            raise ValueError("data.dataset=custom needs data.label_dir and data.image_dir")
        root = Path(data.root) if data.root else Path(".")

        def sub(d):
            return None if d is None else root / d.replace("{split}", split)
        return sub(data.image_dir), sub(data.label_dir), sub(data.instance_dir), {}
    if not data.root:
        raise ValueError(f"data.root is not set: the folder holding the {preset.value} dataset")
    root = Path(data.root)
    if preset is DatasetPreset.ADE20K:
        phase = "training" if split == "train" else "validation"
        return root / "images" / phase, root / "annotations" / phase, None, {}
    if preset is DatasetPreset.CITYSCAPES:
        return (root / "leftImg8bit" / split, root / "gtFine" / split, root / "gtFine" / split,
                {"recursive": True, "image_suffix": "_leftImg8bit",
                 "label_suffix": "_gtFine_labelIds", "instance_suffix": "_gtFine_instanceIds"})
    if preset in (DatasetPreset.COCO_STUFF, DatasetPreset.FACADES):
        inst = root / f"{split}_inst" if preset is DatasetPreset.COCO_STUFF else None
        return root / f"{split}_img", root / f"{split}_label", inst, {}
    raise ValueError(f"data.dataset={preset.value!r} has no folder layout")


def _read_file_list(path: Path, root: Path) -> list[str]:
    """Relative label paths from a list file; absolute paths and '..' may not escape the root."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = PurePosixPath(entry.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or entry.startswith("~") or ":" in p.parts[0]:
            raise DataError(f"{path}, line {n}: {entry!r} escapes the dataset root {root}; "
                            f"entries must be relative paths inside it")
        out.append(str(p))
    return out


def list_examples(config: Config, split: str) -> list[Example]:
    """Every (photo, label, instance) triple of a split, sorted by stem; errors name the files."""
    _check_split(split)
    image_dir, label_dir, inst_dir, how = _layout(config, split)
    recursive = how.get("recursive", False)
    images = _files(image_dir, PHOTO_EXTS, how.get("image_suffix", ""), recursive)
    labels = _files(label_dir, (".png", ".bmp", ".tif", ".tiff"), how.get("label_suffix", ""),
                    recursive)
    use_inst = config.model.use_instance
    if use_inst and inst_dir is None:
        raise ValueError(f"model.use_instance=true but the {config.data.dataset.value} layout has no "
                         f"instance maps (custom: set data.instance_dir)")
    insts = (_files(inst_dir, (".png", ".bmp", ".tif", ".tiff"), how.get("instance_suffix", ""),
                    recursive) if use_inst else {})
    if not labels and not images:
        raise DataError(f"no files in {image_dir} and {label_dir}: the {split} split is empty")
    if config.data.file_list:
        root = label_dir
        wanted = _read_file_list(Path(config.data.file_list), root)
        by_rel = {str(p.relative_to(label_dir)).replace("\\", "/"): s for s, p in labels.items()}
        missing = [w for w in wanted if w not in by_rel]
        if missing:
            raise DataError(f"{config.data.file_list}: {len(missing)} listed file(s) not in "
                            f"{label_dir}: {', '.join(missing[:20])}")
        keep = {by_rel[w] for w in wanted}
        labels = {s: p for s, p in labels.items() if s in keep}
        images = {s: p for s, p in images.items() if s in keep}
        insts = {s: p for s, p in insts.items() if s in keep}
    problems = []
    no_label = sorted(set(images) - set(labels))
    no_photo = sorted(set(labels) - set(images))
    if no_label:
        problems.append(f"{len(no_label)} photo(s) without a label in {label_dir}: "
                        + ", ".join(str(images[s]) for s in no_label[:20]))
    if no_photo:
        problems.append(f"{len(no_photo)} label(s) without a photo in {image_dir}: "
                        + ", ".join(str(labels[s]) for s in no_photo[:20]))
    if use_inst:
        no_inst = sorted(set(labels) - set(insts))
        if no_inst:
            problems.append(f"{len(no_inst)} label(s) without an instance map in {inst_dir}: "
                            + ", ".join(str(labels[s]) for s in no_inst[:20]))
    if problems:
        raise DataError("unpaired files:\n  " + "\n  ".join(problems))
    return [Example(s, images[s], labels[s], insts.get(s)) for s in sorted(labels)]
