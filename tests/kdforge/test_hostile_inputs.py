"""Issue 22, items 6, 8, 9, 10, 11: every probe of tests/hostile/inputs.py handled safely in process (a hang
is cut by an alarm and reported), the peak memory of predicting a large image measured in a subprocess,
and the checks behind them unit by unit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kdforge.compress.data.images import MAX_PIXELS, WORK_PIXELS, open_rgb
from kdforge.compress.errors import UserError
from kdforge.compress.text import printable
from kdforge.compress.train.finite import check_finite
from kdforge.compress.train.meta_limits import MAX_CLASSES, check_meta, preprocessing

from tests.hostile import run_in_process
from tests.hostile.inputs import PROBES, checkpoint, image, png_header

REPO = Path(__file__).resolve().parents[2]
PROBE_SECONDS = 120


class ProbeTimeout(Exception):
    """Raised by the alarm when a probe runs past PROBE_SECONDS (a hang is a finding, not a stuck suite)."""


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_hostile_input_is_handled(probe, tmp_path: Path) -> None:
    def expire(signum: int, frame: object) -> None:
        raise ProbeTimeout(f"{probe.name} still running after {PROBE_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(PROBE_SECONDS)
    try:
        _, outcome, problems = run_in_process(probe, tmp_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert problems == [], (problems, outcome.stderr[-600:])


# ----------------------------------------------------------------------------- item 10: bounded memory
PEAK = (
    "import resource, sys\n"
    "from kdforge.cli import main\n"
    "code = main(['predict', sys.argv[1], sys.argv[2]])\n"
    "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code)\n"
)


def peak_kib(model: Path, picture: Path) -> int:
    """Peak resident memory (KiB) of a fresh process predicting `picture` with `model`."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(model), str(picture)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    line = [row for row in done.stdout.splitlines() if row.startswith("PEAK")]
    assert line and line[0].endswith(" 0"), (done.stdout[-500:], done.stderr[-500:])
    return int(line[0].split()[1])


def test_predicting_a_6000_pixel_image_stays_within_a_bounded_peak(tmp_path: Path) -> None:
    model = checkpoint(tmp_path)
    small = peak_kib(model, image(tmp_path / "small.png"))
    large = peak_kib(model, image(tmp_path / "large.png", (6000, 6000)))
    # decoding 36 M pixels costs ~140 MiB (Pillow keeps RGB at 4 bytes a pixel); the float copies made
    # from the full image before the fix cost ~700 MiB more
    assert large - small < 300 * 1024, (small, large)


# ------------------------------------------------------------------------------------------- unit tests
def test_open_rgb_reduces_large_images_and_refuses_bombs_in_one_line(tmp_path: Path) -> None:
    from PIL import Image

    big = open_rgb(image(tmp_path / "big.png", (4100, 1100)))
    assert big.mode == "RGB" and big.width * big.height <= WORK_PIXELS and big.width >= 2000
    jpeg = tmp_path / "big.jpg"
    Image.new("RGB", (4096, 4096), (10, 200, 10)).save(jpeg, quality=50)
    drafted = open_rgb(jpeg, at_least=(32, 32))
    assert drafted.size == (2048, 2048) and drafted.getpixel((5, 5))[1] > 150
    assert open_rgb(image(tmp_path / "tiny.png", (7, 5))).size == (7, 5)  # small images untouched
    kept = open_rgb(image(tmp_path / "wide.png", (5000, 1000)), at_least=(4000, 16))
    assert kept.width >= 4000
    for side in (30000, 12000):
        with pytest.raises(UserError, match=f"over the {MAX_PIXELS:,}-pixel limit"):
            open_rgb(png_header(tmp_path / f"bomb{side}.png", side, side))
    with pytest.raises(UserError, match="is not a readable image file"):
        open_rgb(png_header(tmp_path / "empty.png", 64, 64))


def test_check_finite_names_the_first_bad_tensor() -> None:
    good = {"w": torch.ones(3), "n": torch.tensor(5), "bn.running_var": torch.ones(2)}
    check_finite(good, "f")
    with pytest.raises(UserError, match=r"f: tensor 'w' holds 1 NaN/inf value\(s\) of 3"):
        check_finite({**good, "w": torch.tensor([1.0, float("inf"), 2.0])}, "f")
    with pytest.raises(UserError, match=r"'bn\.running_var' .* negative"):
        check_finite({**good, "bn.running_var": torch.tensor([1.0, -1.0])}, "f")
    check_finite({"head": torch.tensor([float("nan")])}, "f", skip=["head"])


def test_fit_weights_refuses_nan_but_not_in_a_reinitialised_head() -> None:
    from kdforge.compress.models import build
    from kdforge.compress.weights import fit_weights

    state = build("cnn_2_8", 10).state_dict()
    state["classifier.weight"][0, 0] = float("nan")
    fit_weights(build("cnn_2_8", 3), state, 3, where="w", arch="cnn_2_8", fine_tune=True)  # head re-made
    state["stage0.1.running_var"][0] = float("nan")
    model = build("cnn_2_8", 3)
    before = model.stage0[1].running_var.clone()
    with pytest.raises(UserError, match=r"stage0\.1\.running_var"):
        fit_weights(model, state, 3, where="w", arch="cnn_2_8", fine_tune=True)
    assert torch.equal(model.stage0[1].running_var, before)  # nothing copied


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ("a string", "not a JSON object"),
        ({"model": {"arch": "x" * 10_000, "num_classes": 3}}, "model arch must be a name"),
        ({"model": {"arch": "cnn_2_8", "num_classes": MAX_CLASSES + 1}}, "num_classes must be an integer"),
        ({"model": {"arch": "cnn_2_8", "num_classes": True}}, "num_classes must be an integer"),
        ({"model": {"arch": "cnn_2_8", "num_classes": 3, "options": []}}, "options must be an object"),
        ({"model": {"arch": "cnn_2_8", "num_classes": 3}, "data": {"input_shape": [3, 16]}}, r"\[C, H, W\]"),
        ({"model": {"num_classes": 2}, "data": {"classes": ["a"]}}, "1 class names for a 2-class network"),
        ({"data": {"input_shape": [3, 8, 8], "std": [1.0, 1.0]}}, "std must be a list of 1 or 3 finite"),
    ],
)
def test_check_meta_refuses_in_one_bounded_line(meta, message) -> None:
    with pytest.raises(UserError, match=message) as caught:
        check_meta(meta, "checkpoint 'm'")
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_preprocessing_accepts_what_kdforge_writes() -> None:
    data = {"input_shape": [1, 16, 16], "mean": [0.5], "std": [0.25], "classes": ["0", "1"], "name": "x"}
    checked = preprocessing(data, "m", num_classes=2)
    assert checked.input_shape == (1, 16, 16) and checked.std == [0.25] and checked.classes == ["0", "1"]
    assert preprocessing({**data, "input_shape": [3, 16, 16]}, "m").mean == [0.5]  # one value for all
    with pytest.raises(UserError, match="has no std metadata"):
        preprocessing({k: v for k, v in data.items() if k != "std"}, "m")


def test_printable_escapes_terminal_controls_and_bounds_length() -> None:
    assert printable("\x1b[2Jcat\x07") == "\\x1b[2Jcat\\x07"
    assert printable("dog\u202e\r\n") == "dog\\u202e\\r\\n"
    assert printable("chat noir é") == "chat noir é"
    assert len(printable("x" * 1000, limit=50)) == 50


def test_wide_resnet_size_is_bounded() -> None:
    from kdforge.compress.models import build

    for name in ("wrn_10000_10", "wrn_16_1000", "wrn_" + "9" * 5000 + "_1"):
        with pytest.raises(UserError):
            build(name, 10)


def test_scan_counts_each_file_once_and_keeps_torchvisions_order(tmp_path: Path) -> None:
    from kdforge.compress.data.imagefolder import scan

    for label in ("a", "b"):
        for index in range(3):
            image(tmp_path / label / "sub" / f"{index}.png", (4, 4))
        image(tmp_path / label / "top.png", (4, 4))
    os.symlink(".", tmp_path / "a" / "sub" / "loop")
    os.symlink("../b", tmp_path / "a" / "steal")  # another class's folder: left to that class
    os.symlink("../b/top.png", tmp_path / "a" / "copy.png")  # a second path to a file: counted once
    samples = scan(str(tmp_path), {"a": 0, "b": 1}, (".png",))
    names = [os.path.relpath(p, tmp_path) for p, _ in samples]
    assert names == [
        "a/copy.png",
        "a/top.png",
        "a/sub/0.png",
        "a/sub/1.png",
        "a/sub/2.png",
        "b/sub/0.png",
        "b/sub/1.png",
        "b/sub/2.png",
    ]
    assert [label for _, label in samples] == [0] * 5 + [1] * 3


def test_predict_sanitises_class_names_at_open(tmp_path: Path) -> None:
    from kdforge.compress.train.checkpoint import save_checkpoint
    from kdforge.export.artifact import open_artifact

    from tests.hostile.inputs import good_meta, network

    path = save_checkpoint(tmp_path, "m", network(), good_meta(["\x1b[31mred", "ok", "b\u202e"]))
    assert open_artifact(path).classes == ["\\x1b[31mred", "ok", "b\\u202e"]
    assert json.loads(path.with_suffix(".json").read_text())["data"]["classes"][0] == "\x1b[31mred"


def test_divergence_before_any_checkpoint_does_not_claim_one_is_kept(tmp_path: Path, monkeypatch) -> None:
    from kdforge.compress.jobs import Session, train_teacher
    from kdforge.compress.methods.ce import CE

    from tests.compress.conftest import tiny_config

    original = CE.forward_train

    def poisoned(self, images, labels):
        logits, losses = original(self, images, labels)
        return logits, {**losses, "ce": losses["ce"] * float("nan")}

    monkeypatch.setattr(CE, "forward_train", poisoned)
    with pytest.raises(UserError, match=r"non-finite loss at epoch 1, step 0 .*no checkpoint was saved"):
        train_teacher(tiny_config("teacher_train.epochs=1"), tmp_path, session=Session(progress=False))
    assert not (tmp_path / "checkpoints" / "last.safetensors").exists()
