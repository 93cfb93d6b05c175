"""Hostile run folders and recipes (issue 22 items 3, 4, 5, 7): a run name or a recorded path that leads
out of the run folder, an --out that is the user's own folder, and YAML alias bombs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from tests.hostile import Attack, Outcome, Probe, mentions

TINY = [
    "data.image_size=16",
    "data.batch_size=32",
    "teacher.arch=resnet8",
    "student.arch=resnet8",
    "teacher_train.epochs=1",
    "student_train.epochs=1",
    "device=cpu",
]
SETS = [word for item in TINY for word in ("--set", item)]
USER_FILES = {"config.yaml": "my: own config\n", "metrics.jsonl": '{"mine": 1}\n', "notes.txt": "keep\n"}


def _recipe(root: Path, body: str, name: str = "recipe.yaml") -> Path:
    path = root / "files" / name
    path.write_text(body)
    return path


def _name_absolute(root: Path) -> Attack:
    recipe = _recipe(root, f"name: {root / 'outside' / 'abs'}\n")
    return Attack(["run", str(recipe), *SETS], check=mentions("name:"))


def _name_dotdot(root: Path) -> Attack:
    recipe = _recipe(root, "name: ../../outside/x\n")  # from work/: runs/../../outside/x is root/outside/x
    return Attack(["run", str(recipe), *SETS], check=mentions("name:"))


def _user_folder(root: Path) -> Path:
    mine = root / "outside" / "mine"
    mine.mkdir()
    for name, content in USER_FILES.items():
        (mine / name).write_text(content)
    return mine


def _out_user_folder(root: Path) -> Attack:
    mine = _user_folder(root)
    recipe = _recipe(root, "name: ok\n")
    return Attack(["teacher", str(recipe), "--out", str(mine), *SETS], check=mentions("--out"))


def _deploy_out_user_folder(root: Path) -> Attack:
    mine = _user_folder(root)
    checkpoint = root / "files" / "best.safetensors"  # refused before it is read
    argv = ["deploy", str(checkpoint), "--out", str(mine), "--backends", "torch", "--device", "cpu"]
    return Attack(argv, check=mentions("--out"))


def _hand_made_last(run: Path, state_file: str) -> None:
    """A run folder whose `last` checkpoint (a real resnet8 on digits) names `state_file`."""
    from kdforge.compress.models import build
    from safetensors.torch import save_file

    (run / "checkpoints").mkdir(parents=True)
    (run / ".kdforge.lock").write_text("")
    meta = {
        "format": "kdforge.checkpoint",
        "format_version": 1,
        "role": "teacher",
        "method": "ce",
        "model": {"arch": "resnet8", "options": {}, "num_classes": 10},
        "state_file": state_file,
    }
    tensors = {k: v.contiguous() for k, v in build("resnet8", 10).state_dict().items()}
    save_file(tensors, str(run / "checkpoints" / "last.safetensors"), metadata={"kdforge": json.dumps(meta)})


def _resume_state_outside(root: Path) -> Attack:
    import torch

    torch.save({"epoch": 0, "step": 0}, root / "outside" / "elsewhere.pth")  # loads, if followed
    run = root / "work" / "runs" / "victim"
    _hand_made_last(run, "../../../../outside/elsewhere.pth")
    recipe = _recipe(root, "name: victim\n")
    argv = ["teacher", str(recipe), "--out", str(run), "--resume", *SETS]
    return Attack(argv, check=mentions("training state"))


def _resume_result_outside(root: Path) -> Attack:
    run = root / "work" / "runs" / "pipe"
    (run / "teacher").mkdir(parents=True)
    (run / ".kdforge.lock").write_text("")
    elsewhere = str(root / "outside" / "best.safetensors")
    record = {
        "best_epoch": 1,
        "best_val_top1": 50.0,
        "test_top1": 50.0,
        "test_top5": 90.0,
        "last_test_top1": 50.0,
        "epochs": 1,
        "train_seconds": 1.0,
        "best_path": elsewhere,
        "last_path": elsewhere,
    }
    (run / "teacher" / "result.json").write_text(json.dumps(record))
    recipe = _recipe(root, "name: pipe\ndeploy: {enabled: false}\n")
    return Attack(
        ["run", str(recipe), "--out", str(run), "--resume", *SETS],
        check=mentions("outside its stage folder"),
    )


def billion_laughs(levels: int = 9, flow: bool = False) -> str:
    """A few hundred bytes of YAML whose aliases expand to 9**levels strings."""
    names = [f"l{i}" for i in range(levels + 1)]
    first = "[" + ", ".join(["lol"] * 9) + "]"
    if flow:
        parts = [f"&{names[0]} {first}"]
        parts += [f"&{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 9) + "]" for i in range(1, levels + 1)]
        return "[" + ", ".join(parts) + "]"
    lines = [f"{names[0]}: &{names[0]} {first}"]
    lines += [
        f"{names[i]}: &{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 9) + "]" for i in range(1, levels + 1)
    ]
    return "name: lol\nmethod:\n  options:\n" + "".join(f"    {line}\n" for line in lines)


def _recipe_bomb(root: Path) -> Attack:
    recipe = _recipe(root, billion_laughs())
    return Attack(["run", str(recipe), *SETS], check=mentions("aliases"))


def _set_bomb(root: Path) -> Attack:
    recipe = _recipe(root, "name: ok\n")
    argv = ["teacher", str(recipe), *SETS, "--set", f"method.options.x={billion_laughs(flow=True)}"]
    return Attack(argv, check=mentions("aliases"))


def _recipe_too_big(root: Path) -> Attack:
    recipe = _recipe(root, "name: big\n# " + "x" * (1 << 20) + "\n")
    return Attack(["run", str(recipe), *SETS], check=mentions("KiB"))


HOSTILE_FOLDER = "run `x` |*bold*| $(touch ../../outside/pwned)"


def _deploy_report_escaped(root: Path) -> Attack:
    """A checkpoint in a folder whose name holds Markdown syntax and a command substitution: deploy.md must
    show the name literally and its Reproduce command must give the path back when pasted."""
    from kdforge.compress.config import load_recipe, to_dict

    from tests.hostile.inputs import checkpoint, good_meta

    recipe = to_dict(load_recipe(None, ["data.image_size=16", "device=cpu"]))
    meta = {**good_meta(), "config": recipe}
    meta["data"] = {**meta["data"], "name": "digits", "classes": [str(c) for c in range(10)]}
    meta["model"] = {**meta["model"], "num_classes": 10}
    saved = checkpoint(root / "files" / HOSTILE_FOLDER / "checkpoints", meta)
    out = root / "work" / "deployed"
    argv = ["deploy", str(saved), "--out", str(out), "--backends", "onnxruntime", "--precision", "fp32"]
    argv += ["--batches", "1", "--min-duration", "0.05", "--native", "never"]

    def check(outcome: Outcome) -> str | None:
        if not (out / "deploy.md").is_file():
            return "deploy wrote no deploy.md"
        report = (out / "deploy.md").read_text()
        shown = [line for line in report.splitlines() if "kdforge deploy" in line]
        if not shown or not shown[0].startswith("Reproduce: `"):
            return "deploy.md shows no Reproduce command in a code span"
        span = shown[0].removeprefix("Reproduce: ")
        fence = span[: len(span) - len(span.lstrip("`"))]
        inner = span[len(fence) : -len(fence)]
        if not span.endswith(fence) or fence in inner:
            return f"the Reproduce code span can be closed early: {span[:160]!r}"
        if str(saved) not in shlex.split(inner.strip()):
            return f"the Reproduce command does not give the checkpoint path back: {inner[:160]!r}"
        if any("|*bold*|" in line for line in report.splitlines() if line != shown[0]):
            return "deploy.md shows the folder name's Markdown unescaped outside a code span"
        return None

    return Attack(argv, expect_exit=0, check=check)


def _deploy_without_recipe(root: Path) -> Attack:
    """A checkpoint whose metadata lacks the training recipe deploy reads its data from."""
    from tests.hostile.inputs import checkpoint

    saved = checkpoint(root / "files" / "checkpoints")
    argv = ["deploy", str(saved), "--out", str(root / "work" / "deployed"), "--backends", "onnxruntime"]
    return Attack(argv, check=mentions("recipe"))


PROBES: list[Probe] = [
    Probe("name-absolute", 3, "a recipe whose name is an absolute path aims report.md there", _name_absolute),
    Probe("name-dotdot", 3, "a recipe name ../../outside/x leads out of runs/", _name_dotdot),
    Probe("out-user-folder", 4, "--out at the user's own non-empty folder", _out_user_folder),
    Probe("deploy-out-user-folder", 4, "deploy --out at the user's own folder", _deploy_out_user_folder),
    Probe("resume-state-outside", 5, "a run's state_file is ../../../outside/x", _resume_state_outside),
    Probe(
        "resume-result-outside", 5, "a run's result.json names a checkpoint outside", _resume_result_outside
    ),
    Probe("recipe-billion-laughs", 7, "a 400-byte recipe of nested aliases", _recipe_bomb),
    Probe("set-billion-laughs", 7, "a --set value of nested aliases", _set_bomb),
    Probe("recipe-too-big", 7, "a recipe of over a MiB", _recipe_too_big),
    Probe(
        "deploy-report-hostile-path",
        12,
        "a checkpoint folder named with Markdown and $(...) reaches deploy.md",
        _deploy_report_escaped,
    ),
    Probe(
        "deploy-no-recipe", 9, "deploy a checkpoint whose metadata lacks its recipe", _deploy_without_recipe
    ),
]
