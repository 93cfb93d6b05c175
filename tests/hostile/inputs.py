"""Hostile inputs of issue 22, items 6, 8, 9, 10 and 11: image folders whose links loop, weights holding
NaN, checkpoint and artifact metadata that asks for absurd sizes, image bombs and class names that carry
terminal escapes. Every file is built here, small; `PROBES` lists them for the shared harness."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

from tests.hostile import Attack, Outcome, Probe, mentions

CLASSES = ["cat", "dog", "fox"]
SHAPE = [3, 16, 16]
ARCH = "cnn_2_8"


# ------------------------------------------------------------------------------------------- builders
def network(classes: int = len(CLASSES)) -> Any:
    """A small freshly initialised registry network."""
    from kdforge.compress.models import build

    return build(ARCH, classes)


def good_meta(classes: list[str] | None = None) -> dict[str, Any]:
    """The metadata kdforge writes with a checkpoint (what predict and eval read)."""
    classes = list(CLASSES if classes is None else classes)
    return {
        "role": "teacher",
        "model": {"arch": ARCH, "options": {}, "num_classes": len(classes)},
        "data": {
            "name": "digits",
            "classes": classes,
            "mean": [0.5] * 3,
            "std": [0.25] * 3,
            "input_shape": SHAPE,
        },
    }


def checkpoint(folder: Path, meta: dict[str, Any] | None = None, name: str = "model") -> Path:
    """A kdforge checkpoint of `network()` written by kdforge's own save_checkpoint."""
    from kdforge.compress.train.checkpoint import save_checkpoint

    meta = meta or good_meta()
    return save_checkpoint(folder, name, network(meta["model"]["num_classes"]), meta)


def raw_checkpoint(path: Path, metadata: str, tensors: dict[str, Any] | None = None) -> Path:
    """A safetensors file whose kdforge metadata is the JSON text `metadata`, as an attacker writes it."""
    from safetensors.torch import save_file

    state = tensors if tensors is not None else network().state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"kdforge": metadata})
    return path


def hostile_meta(**changes: Any) -> str:
    """kdforge checkpoint metadata with `model.<key>` / `data.<key>` replaced (JSON text)."""
    meta = {"format": "kdforge.checkpoint", "format_version": 1, **good_meta()}
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        meta[section][key] = value
    return json.dumps(meta)


def image(path: Path, size: tuple[int, int] = (16, 16), colour: tuple[int, int, int] = (90, 160, 30)) -> Path:
    """A solid-colour RGB PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares width x height RGB pixels, with one tiny IDAT (a decompression bomb's
    header: nothing behind it), every chunk with a correct CRC."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def predict(root: Path, model: Path, *images: Path, expect_exit: int = 2, check: Any = None) -> Attack:
    """`kdforge predict MODEL IMAGE...`, with a plain 16x16 image when none is given."""
    shown = images or (image(root / "files" / "photo.png"),)
    return Attack(["predict", str(model), *map(str, shown)], expect_exit=expect_exit, check=check)


def predict_on_meta(**changes: Any) -> Any:
    """A probe builder: predict on a checkpoint whose metadata has `changes`."""

    def build(root: Path) -> Attack:
        return predict(root, raw_checkpoint(root / "files" / "model.safetensors", hostile_meta(**changes)))

    return build


# --------------------------------------------------------------------------------- item 6: image folder
def image_folder(root: Path, links: dict[str, str]) -> Attack:
    """train/ and val/ with 2 classes x 4 PNGs each, the links {path in the tree: target} added, and
    `kdforge eval` of a 2-class checkpoint on it, which must count the 8 val images once each."""
    data = root / "files" / "data"
    for split in ("train", "val"):
        for label, colour in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
            for index in range(4):
                image(data / split / label / f"{index}.png", (8, 8), (colour[0], index * 20, colour[2]))
    for where, target in links.items():
        os.symlink(target, data / where)
    meta = good_meta(["cat", "dog"])
    meta["data"]["input_shape"] = [3, 16, 16]
    model = checkpoint(root / "files", meta)
    recipe = root / "files" / "recipe.yaml"
    recipe.write_text(
        "name: hostile_folder\ndevice: cpu\ndata:\n  name: imagefolder\n"
        f"  root: {json.dumps(str(data))}\n  image_size: 16\n  batch_size: 4\n  eval_batch_size: 8\n"
        "  workers: 0\n  val_fraction: 0.25\n"
    )

    def counted_once(outcome: Outcome) -> str | None:
        return (
            None if ", 8 images:" in outcome.stdout else f"expected 8 test images: {outcome.stdout[-300:]!r}"
        )

    return Attack(["eval", str(model), "--recipe", str(recipe)], expect_exit=0, check=counted_once)


def folder_bomb(root: Path) -> Attack:
    """An image folder holding a PNG header that declares 30000 x 30000 pixels."""
    attack = image_folder(root, {})
    png_header(root / "files" / "data" / "val" / "cat" / "2.png", 30000, 30000)
    return Attack(attack.argv, expect_exit=2, check=mentions("2.png"))


# ---------------------------------------------------------------------------------- item 8: NaN weights
RECIPE = (
    "name: hostile_nan\nseed: 0\ndevice: cpu\ndata:\n  name: digits\n  image_size: 16\n  batch_size: 64\n"
    f"  workers: 0\nteacher:\n  arch: {ARCH}\nteacher_train:\n  epochs: 1\n  warmup_epochs: 0\n"
    f"student:\n  arch: {ARCH}\nstudent_train:\n  epochs: 1\n  warmup_epochs: 0\nmethod:\n  name: kd\n"
)


def poisoned(
    key: str = "stage0.1.running_var", value: float = float("nan"), classes: int = 10
) -> dict[str, Any]:
    """The state dict of `network(classes)` with one value of `key` replaced."""
    state = network(classes).state_dict()
    state[key].view(-1)[0] = value
    return state


def nothing_trained(outcome: Outcome) -> str | None:
    """A check: no checkpoint was written (the file was refused before training)."""
    written = [p.name for p in outcome.work.rglob("*.safetensors")]
    return f"training ran and wrote {written[:3]}" if written else None


def init_nan_running_var(root: Path) -> Attack:
    """`kdforge teacher --init` from a state dict whose BatchNorm running_var holds NaN."""
    import torch

    recipe = root / "files" / "recipe.yaml"
    recipe.write_text(RECIPE)
    torch.save(poisoned(), root / "files" / "init.pth")
    argv = ["teacher", str(recipe), "--init", str(root / "files" / "init.pth"), "--no-progress"]
    return Attack(argv, check=lambda o: nothing_trained(o) or mentions("stage0.1.running_var")(o))


def teacher_inf_weight(root: Path) -> Attack:
    """`kdforge compress --teacher` a kdforge checkpoint whose conv weight holds inf."""
    recipe = root / "files" / "recipe.yaml"
    recipe.write_text(RECIPE)
    meta = good_meta([str(d) for d in range(10)])
    text = json.dumps({"format": "kdforge.checkpoint", "format_version": 1, **meta})
    model = raw_checkpoint(
        root / "files" / "teacher.safetensors", text, poisoned("stage0.0.weight", float("inf"))
    )
    argv = ["compress", str(recipe), "--teacher", str(model), "--no-progress"]
    return Attack(argv, check=lambda o: nothing_trained(o) or mentions("stage0.0.weight")(o))


def predict_nan_weights(root: Path) -> Attack:
    """`kdforge predict` on a checkpoint whose classifier weight holds NaN."""
    text = json.dumps({"format": "kdforge.checkpoint", "format_version": 1, **good_meta()})
    state = poisoned("classifier.weight", classes=len(CLASSES))
    model = raw_checkpoint(root / "files" / "model.safetensors", text, state)
    return predict(root, model, check=mentions("classifier.weight"))


# ------------------------------------------------------------------------------ item 9: hostile metadata
def onnx_short_classes(root: Path) -> Attack:
    """An ONNX file of a 3-class network whose metadata names 2 classes."""
    import onnx
    from kdforge.export.onnx import to_onnx

    path = to_onnx(network().eval(), root / "files" / "model.onnx", (1, *SHAPE), exporter="torchscript")
    graph = onnx.load(str(path))
    props = {"classes": ["cat", "dog"], "mean": [0.5] * 3, "std": [0.25] * 3}
    for key, value in props.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(graph, str(path))
    return predict(root, Path(path), check=mentions("2 class names"))


def engine_huge_input(root: Path) -> Attack:
    """A TensorRT engine whose (matching) sidecar declares a 30000 x 30000 input."""
    from kdforge.export.sidecar import write_sidecar

    engine = root / "files" / "model.engine"
    engine.write_bytes(b"not really an engine")
    meta = {"kind": "tensorrt-engine", "classes": CLASSES, "mean": [0.5] * 3, "std": [0.25] * 3}
    write_sidecar(engine, {**meta, "input_shape": [3, 30000, 30000]})
    return predict(root, engine, check=mentions("input_shape H"))


def meta_of_type(text: str, named: str = "JSON object") -> Any:
    """A probe builder: predict on a checkpoint whose metadata is the JSON `text` (not an object)."""

    def build(root: Path) -> Attack:
        model = raw_checkpoint(root / "files" / "model.safetensors", text)
        return predict(root, model, check=mentions(named))

    return build


# ----------------------------------------------------------------------------------- item 10: image bombs
def png_bomb(width: int, height: int) -> Any:
    def build(root: Path) -> Attack:
        bomb = png_header(root / "files" / "bomb.png", width, height)
        return predict(root, checkpoint(root / "files"), bomb, check=mentions("bomb.png", "pixel"))

    return build


def huge_image(root: Path) -> Attack:
    """A real 6000 x 6000 image (solid colour, so the file is small): predicted, exit 0."""
    big = image(root / "files" / "big.png", (6000, 6000))

    def predicted(outcome: Outcome) -> str | None:
        lines = outcome.stdout.strip().splitlines()
        return None if len(lines) == 1 and "big.png: " in lines[0] else f"no prediction: {outcome.stdout!r}"

    return predict(root, checkpoint(root / "files"), big, expect_exit=0, check=predicted)


# ------------------------------------------------------------------------------ item 11: terminal escapes
ESCAPES = ["\x1b[2J\x1b]0;owned\x07cat", "dog\u202egnp.exe", "fox\r\nphoto.png: cat 100.0%"]


def ansi_classes(root: Path) -> Attack:
    """A checkpoint whose class names clear the screen, retitle the terminal and forge an output line."""
    model = checkpoint(root / "files", good_meta(ESCAPES))

    def clean(outcome: Outcome) -> str | None:
        bad = [c for c in ("\x1b", "\x07", "\u202e", "\r") if c in outcome.stdout]
        lines = outcome.stdout.strip().splitlines()
        if bad:
            return f"stdout carries {bad!r}"
        return None if len(lines) == 1 else f"{len(lines)} output lines for one image: {lines!r}"

    return predict(root, model, expect_exit=0, check=clean)


PROBES: list[Probe] = [
    Probe(
        "folder-self-link",
        6,
        "a class folder holds a link to itself",
        lambda r: image_folder(r, {"val/cat/again": "."}),
    ),
    Probe(
        "folder-two-self-links",
        6,
        "a class folder holds two links to itself (exponential walk)",
        lambda r: image_folder(
            r, {"val/cat/a": ".", "val/cat/b": ".", "train/dog/a": ".", "train/dog/b": "."}
        ),
    ),
    Probe(
        "folder-link-to-parent",
        6,
        "a class folder links to its split folder",
        lambda r: image_folder(r, {"val/cat/up": ".."}),
    ),
    Probe("folder-png-bomb", 10, "an image folder holds a 30000x30000 PNG header", folder_bomb),
    Probe(
        "init-nan-running-var", 8, "teacher --init weights whose running_var holds NaN", init_nan_running_var
    ),
    Probe(
        "teacher-inf-weight",
        8,
        "compress --teacher a checkpoint whose conv weight holds inf",
        teacher_inf_weight,
    ),
    Probe(
        "predict-nan-weights", 8, "predict on a checkpoint whose classifier holds NaN", predict_nan_weights
    ),
    Probe(
        "meta-num-classes-1e9",
        9,
        "checkpoint metadata num_classes 1e9",
        predict_on_meta(model__num_classes=10**9),
    ),
    Probe(
        "meta-num-classes-float",
        9,
        "checkpoint metadata num_classes 1e9 as a float",
        predict_on_meta(model__num_classes=1e9),
    ),
    Probe(
        "meta-input-30000",
        9,
        "checkpoint input_shape 3x30000x30000",
        predict_on_meta(data__input_shape=[3, 30000, 30000]),
    ),
    Probe(
        "meta-classes-short",
        9,
        "2 class names for a 3-class head",
        predict_on_meta(data__classes=["cat", "dog"]),
    ),
    Probe("meta-arch-wrn-10000", 9, "arch wrn_10000_10", predict_on_meta(model__arch="wrn_10000_10")),
    Probe("meta-std-zero", 9, "std of zero", predict_on_meta(data__std=[0.0, 0.25, 0.25])),
    Probe("meta-mean-nan", 9, "mean of NaN", predict_on_meta(data__mean=[float("nan")] * 3)),
    Probe(
        "meta-class-name-1mb",
        9,
        "a 1 MB class name",
        predict_on_meta(data__classes=["x" * 2**20, "dog", "fox"]),
    ),
    Probe(
        "meta-classes-not-strings",
        9,
        "class names that are objects",
        predict_on_meta(data__classes=[{}, [], None]),
    ),
    Probe(
        "meta-string",
        9,
        "checkpoint metadata that is a JSON string",
        meta_of_type(json.dumps("kdforge.checkpoint")),
    ),
    Probe(
        "meta-deeply-nested",
        9,
        "checkpoint metadata nested 200000 deep",
        meta_of_type("[" * 200_000 + "]" * 200_000, "no kdforge metadata"),
    ),
    Probe("meta-list", 9, "checkpoint metadata that is a JSON list", meta_of_type(json.dumps([1, 2, 3]))),
    Probe("onnx-classes-short", 9, "ONNX metadata naming fewer classes than outputs", onnx_short_classes),
    Probe("engine-input-30000", 9, "a compiled file's sidecar with a 30000x30000 input", engine_huge_input),
    Probe("png-header-bomb", 10, "a PNG header declaring 30000x30000 pixels", png_bomb(30000, 30000)),
    Probe(
        "png-header-12000", 10, "a PNG header declaring 12000x12000 pixels, no data", png_bomb(12000, 12000)
    ),
    Probe("png-6000-legit", 10, "a real 6000x6000 image", huge_image),
    Probe("ansi-class-names", 11, "class names with terminal escapes", ansi_classes),
]
