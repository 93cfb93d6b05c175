"""Starting weights a user already has, in the form they have them (see docs/training.md, "Bring your
own model").

Accepted, for a network of the model registry (`arch` + `options` of the recipe):

- a kdforge checkpoint (safetensors with kdforge metadata);
- a plain PyTorch state dict (`.pth`/`.pt`/`.bin`, `torch.save`), read with `torch.load(weights_only=True)`
  so no pickled code ever runs; DDP's `module.`, `model.` and torch.compile's `_orig_mod.` prefixes and
  `state_dict`/`model` wrapper dicts are unwrapped;
- a safetensors state dict without kdforge metadata (what timm and Hugging Face ship);
- torchvision and timm pretrained weights by name (`options: {weights: DEFAULT}` for `tv:`,
  `pretrained: true` for `timm:`), read from the local caches those libraries fill. kdforge never
  downloads: a missing file is one line naming it and the command that fetches it;

and, as a teacher used as is only, a `torch.export` program (`.pt2`) a user can no longer rebuild as
Python code: `ExportedTeacher` runs its forward pass and nothing else.

Loading is strict: every tensor of the network, same keys, same shapes, or one line naming the first key
that does not fit, before any weight is touched. The one exception is fine-tuning: when the file's
classifier head predicts another number of classes, the head (the final Linear / 1x1 conv producing
`num_classes` outputs, and an auxiliary head of the same kind) keeps its fresh initialisation and
`Provenance` says so.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import torch
from kdforge.compress.errors import UserError
from torch import nn

STARTING_OPTIONS = ("weights", "pretrained")  # recipe `options` that name starting weights, not architecture
PREFIXES = ("module.", "model.", "_orig_mod.")  # DDP, Lightning-style wrappers, torch.compile
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "params")


@dataclass(frozen=True)
class Provenance:
    """Where a network's starting weights came from, and what of them was used."""

    source: str  # the file (or `torchvision <enum>` / `timm <repo>` and the cached file)
    format: str  # kdforge, state_dict, safetensors, torchvision, timm, torch.export
    sha256: str
    loaded: int = 0  # tensors taken from the file
    reinitialised: tuple[str, ...] = ()  # head tensors left at their fresh initialisation
    classes: tuple[int, int] | None = None  # (the file's class count, the run's) when the head changed

    def as_meta(self) -> dict[str, Any]:
        """The checkpoint's `meta["init"]` (JSON)."""
        return {
            "source": self.source,
            "format": self.format,
            "sha256": self.sha256,
            "loaded": self.loaded,
            "reinitialised": list(self.reinitialised),
        }

    def line(self, role: str, arch: str, what: str = "starting weights") -> str:
        """One line for the run's output."""
        start = f"{role} {arch}: {what} {self.source} ({self.format}, sha256 {self.sha256[:12]})"
        if self.format == "torch.export":
            return f"{start}: a frozen torch.export program, forward pass only"
        if not self.reinitialised:
            return f"{start}: loaded all {self.loaded} tensors"
        change = f", {self.classes[0]} -> {self.classes[1]} classes" if self.classes else ""
        return (
            f"{start}: loaded {self.loaded} tensors; re-initialised the classifier head "
            f"({', '.join(self.reinitialised)}{change}): fine-tuning"
        )


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(builder options, starting-weight options `weights`/`pretrained` that ask for weights)."""
    build = {k: v for k, v in options.items() if k not in STARTING_OPTIONS}
    named = {k: options[k] for k in STARTING_OPTIONS if k in options and options[k] not in (None, False)}
    return build, named


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# ------------------------------------------------------------------------------------------ formats


def sniff(path: str | Path) -> str:
    """The file's format from its bytes: kdforge, safetensors, state_dict (torch.save), torch.export, aoti."""
    path = Path(path)
    if path.is_dir() and (path / "best.safetensors").is_file():
        path = path / "best.safetensors"
    if not path.is_file():
        raise UserError(f"weights file {str(path)!r} not found")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = [_inside(name) for name in archive.namelist()]
        except zipfile.BadZipFile as exc:
            raise UserError(f"{str(path)!r} is a damaged zip file ({_reason(exc)})") from None
        if "archive_format" in names:
            return "aoti" if any(name.startswith("data/aotinductor/") for name in names) else "torch.export"
        return "state_dict"
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header size, then the JSON header
        (size,) = struct.unpack("<Q", head[:8])
        if 8 + size <= path.stat().st_size:
            with open(path, "rb") as handle:
                handle.seek(8)
                try:
                    header = json.loads(handle.read(size))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    header = None
            if isinstance(header, dict):
                meta = header.get("__metadata__") or {}
                return "kdforge" if "kdforge" in meta else "safetensors"
    if head[:1] == b"\x80":  # a pickle (torch.save's legacy format)
        return "state_dict"
    raise UserError(
        f"{str(path)!r} is not a weights file kdforge reads: give a kdforge checkpoint, a state dict "
        "(torch.save: .pth/.pt/.bin), a safetensors file or a torch.export program (.pt2)"
    )


def _inside(name: str) -> str:
    """An archive entry without the archive's root folder (torch.save and torch.export both add one)."""
    parts = PurePosixPath(name).parts
    return "/".join(parts[1:]) if len(parts) > 1 else name


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str, dict[str, Any] | None]:
    """(tensors, format, kdforge metadata or None) of a weights file, without running pickled code."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    kind = sniff(path)
    where = repr(str(path))
    if kind == "torch.export":
        raise UserError(
            f"{where} is a torch.export program: it has no weights kdforge can start a network from; "
            "use it as a teacher as is (teacher.checkpoint or --teacher)"
        )
    if kind == "aoti":
        raise UserError(f"{where} is a compiled AOTInductor package, not weights; give the network's weights")
    if kind == "kdforge":
        from kdforge.compress.train.checkpoint import read_checkpoint

        checkpoint = read_checkpoint(path)
        if checkpoint.meta["model"].get("reparameterized"):
            raise UserError(f"{where} is a merged (deployable) network; start from its training checkpoint")
        return checkpoint.tensors, "kdforge", checkpoint.meta
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), "safetensors", None
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{where} is not a readable safetensors file ({_reason(exc)})") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{where} holds pickled objects other than tensors, which kdforge never unpickles (it loads "
            f"with weights_only=True: {_reason(exc)}); re-save the weights alone: "
            "torch.save(model.state_dict(), PATH)"
        ) from None
    except Exception as exc:  # a torn or foreign file
        raise UserError(f"{where} cannot be read as a PyTorch state dict ({_reason(exc)})") from None
    return unwrap(loaded, where), "state_dict", None


def unwrap(loaded: Any, where: str) -> dict[str, torch.Tensor]:
    """The state dict inside what torch.load returned: itself, or under `state_dict`, `model`, ..."""
    node = loaded
    for _ in range(4):
        if not isinstance(node, Mapping):
            break
        if node and all(isinstance(v, torch.Tensor) for v in node.values()):
            return {str(k): v for k, v in node.items()}
        inner = next((node[k] for k in WRAPPER_KEYS if isinstance(node.get(k), Mapping)), None)
        if inner is None:
            tensors = {str(k): v for k, v in node.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
            break
        node = inner
    shown = f"keys {list(loaded)[:5]}" if isinstance(loaded, Mapping) else type(loaded).__name__
    raise UserError(
        f"{where} holds no state dict ({shown}); save one with torch.save(model.state_dict(), PATH)"
    )


def strip_prefixes(tensors: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Drop a wrapper's key prefix (`module.`, `model.`, `_orig_mod.`) every key carries but the model's
    own keys do not, repeatedly (DDP around torch.compile: `module._orig_mod.`)."""
    changed = True
    while changed and tensors:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in tensors) and not all(k.startswith(prefix) for k in expected):
                tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
                changed = True
    return tensors


# --------------------------------------------------------------------------------------------- fit


def head_paths(model: nn.Module, num_classes: int) -> list[str]:
    """Module paths of the classifier head(s): every nn.Linear with `num_classes` outputs (the head and an
    auxiliary head, e.g. Inception's), else the last 1x1 nn.Conv2d with `num_classes` outputs
    (SqueezeNet)."""
    linear = [
        p for p, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes
    ]
    if linear:
        return linear
    convs = [
        p
        for p, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.out_channels == num_classes and tuple(m.kernel_size) == (1, 1)
    ]
    return convs[-1:]


def fit_weights(
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    num_classes: int,
    *,
    where: str,
    arch: str,
    fine_tune: bool,
    path: str | None = None,
) -> tuple[int, tuple[str, ...], tuple[int, int] | None]:
    """Load `tensors` into `model` strictly, except a head whose class count differs when `fine_tune`
    (it keeps its fresh initialisation). Every check runs before the first weight is copied.

    Returns (tensors loaded, head tensors re-initialised, (the file's classes, num_classes) or None)."""
    expected = model.state_dict()
    tensors = strip_prefixes(dict(tensors), set(expected))
    heads = {f"{p}.{n}" for p in head_paths(model, num_classes) for n in ("weight", "bias")}
    if tensors and not set(tensors) & set(expected):
        first_file, first_model = next(iter(tensors)), next(iter(expected))
        raise UserError(
            f"{where} does not fit {arch}: none of its {len(tensors)} tensor names is one of the model's "
            f"(the file has {first_file!r}, the model {first_model!r}); is it another architecture?"
        )
    reinitialised: list[str] = []
    file_classes = None
    for key, want in expected.items():
        got = tensors.get(key)
        if got is None:
            if key.endswith("num_batches_tracked"):  # files older than the counter (torchvision's) lack it
                continue
            raise UserError(f"{where} does not fit {arch}: it has no tensor {key!r}")
        if tuple(got.shape) == tuple(want.shape):
            continue
        if key in heads and got.dim() == want.dim() and got.shape[1:] == want.shape[1:]:
            if not fine_tune:
                fix = f": fine-tune it first (kdforge teacher RECIPE --init {path})" if path else ""
                raise UserError(
                    f"teacher {where} predicts {got.shape[0]} classes but the data set has {num_classes}{fix}"
                )
            reinitialised.append(key)
            file_classes = int(got.shape[0])
            continue
        raise UserError(
            f"{where} does not fit {arch}: {key} has shape {tuple(got.shape)}, the model expects "
            f"{tuple(want.shape)}"
        )
    extra = [k for k in tensors if k not in expected]
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise UserError(f"{where} does not fit {arch}: it has a tensor {extra[0]!r}{more} the model lacks")
    state = {k: v for k, v in tensors.items() if k not in reinitialised}
    model.load_state_dict(state, strict=False)
    classes = (file_classes, num_classes) if file_classes is not None else None
    return len(state), tuple(reinitialised), classes


# ---------------------------------------------------------------------------- pretrained by name


def torchvision_weights(name: str, value: Any, role: str = "network") -> tuple[Path, str]:
    """(cached file, `ResNet18_Weights.IMAGENET1K_V1`) of `tv:<name>`'s weights `value` (DEFAULT or a
    weights name), read from torch.hub's cache ($TORCH_HOME/hub/checkpoints). Missing: one line."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise UserError(
            f"tv:{name} has no published torchvision weights; remove {role}.options.weights"
        ) from None
    text = "DEFAULT" if value is True else value
    if not isinstance(text, str):
        raise UserError(f"{role}.options.weights: expected DEFAULT or a weights name, got {value!r}")
    text = text.removeprefix(f"{enum.__name__}.")
    choices = ["DEFAULT", *enum.__members__]
    if text not in choices:
        raise UserError(
            f"{role}.options.weights: tv:{name} has no weights {text!r}; choose one of {', '.join(choices)}"
        )
    weights = enum.DEFAULT if text == "DEFAULT" else enum[text]
    label = f"{enum.__name__}.{weights.name}"
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if not path.is_file():
        raise UserError(
            f"torchvision weights {label} for tv:{name} are not in the local cache: {path} is missing "
            f"(kdforge never downloads); on a machine with internet run `curl -L --create-dirs -o {path} "
            f"{weights.url}` and copy the file here (TORCH_HOME moves the cache), or train from scratch: "
            f"--set {role}.options={{}}"
        )
    return path, label


def _torchvision_keys(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DenseNet's published files name `norm.1` what the model calls `norm1` (torchvision renames too)."""
    pattern = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
    )
    renamed = {}
    for key, value in tensors.items():
        match = pattern.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache: HF_HUB_CACHE, else $HF_HOME/hub (HF_HOME: ~/.cache/huggingface)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    home = os.environ.get("HF_HOME") or os.path.join(cache, "huggingface")
    return Path(home).expanduser() / "hub"


def timm_weights(name: str, value: Any, role: str = "network") -> tuple[Path, str]:
    """(cached file, `timm/<repo>`) of `timm:<name>`'s pretrained weights from the Hugging Face hub
    cache (models--timm--<name>/snapshots/<revision>/model.safetensors). Missing: one line."""
    if value is not True:
        raise UserError(
            f"{role}.options.pretrained: expected true, got {value!r} (a weights tag goes in the name: "
            "timm:resnet18.a1_in1k)"
        )
    try:
        from timm.models import get_pretrained_cfg
    except ImportError:
        raise UserError(f"model 'timm:{name}' needs timm, which is not installed: pip install timm") from None
    config = get_pretrained_cfg(name)
    repo = getattr(config, "hf_hub_id", None) if config is not None else None
    if not repo:
        raise UserError(
            f"timm:{name} names no Hugging Face hub weights; fetch its weights yourself and pass the file "
            f"({role}.init: PATH)"
        )
    repo = repo.split("@")[0]
    folder = hf_hub_cache() / ("models--" + repo.replace("/", "--"))
    files = [config.hf_hub_filename] if getattr(config, "hf_hub_filename", None) else []
    files += ["model.safetensors", "pytorch_model.bin"]
    snapshots = folder / "snapshots"
    ref = folder / "refs" / "main"
    order = [ref.read_text().strip()] if ref.is_file() else []
    if snapshots.is_dir():
        order += sorted(p.name for p in snapshots.iterdir() if p.name not in order)
    for revision in order:
        for file in files:
            if (snapshots / revision / file).is_file():
                return snapshots / revision / file, repo
    raise UserError(
        f"timm weights {repo} for timm:{name} are not in the Hugging Face cache: "
        f"{snapshots}/<revision>/model.safetensors is missing (kdforge never downloads); on a machine with "
        f"internet run `huggingface-cli download {repo} model.safetensors` and copy {folder} here "
        f"(HF_HOME / HF_HUB_CACHE move the cache), or train from scratch: --set {role}.options={{}}"
    )


# ------------------------------------------------------------------------------------------ start


def start_weights(
    model: nn.Module,
    arch: str,
    num_classes: int,
    *,
    path: str | Path | None = None,
    named: Mapping[str, Any] | None = None,
    role: str = "network",
    fine_tune: bool = True,
) -> Provenance:
    """Load the starting weights of `model` (built as `arch` with `num_classes` outputs): from the file
    `path` in any accepted format, or the pretrained weights `named` (`{weights: ...}` / `{pretrained:
    true}`) from the local caches. Fine-tunes (a new head) when the class count differs and `fine_tune`."""
    if path is not None:
        file, label = Path(path), os.path.abspath(path)
        if file.is_dir():
            file = file / "best.safetensors"
        tensors, kind, meta = read_state_dict(file)
        if meta is not None and meta["model"]["arch"] != arch:
            raise UserError(
                f"checkpoint {str(file)!r} is a {meta['model']['arch']}, not {arch}; fix the arch or the path"
            )
    else:
        named = dict(named or {})
        if arch.startswith("tv:") and set(named) == {"weights"}:
            file, label = torchvision_weights(arch[3:], named["weights"], role)
            kind = "torchvision"
        elif arch.startswith("timm:") and set(named) == {"pretrained"}:
            file, label = timm_weights(arch[5:], named["pretrained"], role)
            kind = "timm"
        else:
            key = next(iter(named))
            if arch.startswith("tv:"):
                hint = "torchvision models take weights: DEFAULT (or a weights name such as IMAGENET1K_V1)"
            elif arch.startswith("timm:"):
                hint = "timm models take pretrained: true"
            else:
                hint = f"zoo models have no published weights; start from a file ({role}.init: PATH)"
            raise UserError(f"{role}.options.{key}: {hint}")
        tensors, _, _ = read_state_dict(file)
        if kind == "torchvision":
            tensors = _torchvision_keys(tensors)
        label = f"{label} ({file})"
    where = f"{role} weights {str(file)!r}"
    loaded, reinitialised, classes = fit_weights(
        model, tensors, num_classes, where=where, arch=arch, fine_tune=fine_tune, path=str(path or file)
    )
    return Provenance(label, kind, sha256_file(file), loaded, reinitialised, classes)


# ------------------------------------------------------------------------------- torch.export teacher

EXPORTED_ONLY = (
    "is a torch.export program (.pt2): kdforge runs only its forward pass (the logits), so a method "
    "that taps the teacher's features or trains it cannot use it; use kd, dkd or dist, or give the "
    "teacher as a checkpoint or state dict of a registry architecture"
)


class ExportedTeacher(nn.Module):
    """A `torch.export` program as a frozen teacher: forward pass only.

    The program is not a submodule: the teacher shows no parameters, buffers or submodules (nothing to
    train, save or tap), and a forward hook on it (what feature taps use) is refused in one line. It
    moves to the input's device on the first call there and always runs on contiguous inputs.
    """

    def __init__(self, program: Any, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        self.__dict__["_program"] = program
        self.__dict__["_runner"] = None
        self.__dict__["_device"] = None

    def _runner_for(self, device: torch.device) -> Any:
        if self._runner is None or self._device != device:
            from torch.export.passes import move_to_device_pass

            runner = move_to_device_pass(self._program, device).module()
            for parameter in runner.parameters():
                parameter.requires_grad_(False)
            self.__dict__["_runner"], self.__dict__["_device"] = runner, device
        return self._runner

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._runner_for(images.device)(images.contiguous())

    def parameter_count(self) -> int:
        return sum(t.numel() for t in self._program.state_dict.values())

    def register_forward_hook(self, *args: Any, **kwargs: Any) -> Any:
        raise UserError(f"teacher {self.path!r} {EXPORTED_ONLY}")

    def register_forward_pre_hook(self, *args: Any, **kwargs: Any) -> Any:
        raise UserError(f"teacher {self.path!r} {EXPORTED_ONLY}")


def _check_archive(path: Path) -> None:
    """Refuse a .pt2 whose loading would unpickle anything beyond plain tensors (torch.export.load falls
    back to full unpickling for some entries) or load compiled code, before torch reads it."""
    where = repr(str(path))
    with zipfile.ZipFile(path) as archive:
        entries = {_inside(name): name for name in archive.namelist()}
        if "archive_version" not in entries or not any(
            n.startswith("models/") and n.endswith(".json") for n in entries
        ):
            raise UserError(f"{where} is not a torch.export.save program; export it with torch.export.save")
        for name, full in entries.items():
            if name.startswith("data/aotinductor/"):
                raise UserError(f"{where} is a compiled AOTInductor package, not a torch.export program")
            refused = None
            if name.endswith("_weights_config.json") or name.endswith("_constants_config.json"):
                config = json.loads(archive.read(full)).get("config", {})
                for key, entry in config.items():
                    if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(
                        ("weight_", "tensor_")
                    ):
                        refused = f"its entry {key!r} is a pickled object"
                        break
            elif name.startswith("data/constants/") and name.endswith(".pt"):
                refused = "it stores constants in the pickled legacy format"
            elif name.startswith("data/sample_inputs/"):
                try:
                    torch.load(io.BytesIO(archive.read(full)), weights_only=True)
                except Exception:
                    refused = "its sample inputs are pickled objects other than tensors"
            if refused:
                raise UserError(
                    f"{where}: {refused}; kdforge never unpickles code. Re-export a plain program "
                    "(tensors only) with torch.export.save"
                )


def load_exported(
    path: str | Path, input_shape: tuple[int, ...], num_classes: int
) -> tuple[ExportedTeacher, Provenance]:
    """A `.pt2` teacher (torch.export.save), checked safe to load, runnable at batch 1 and 3 on the data's
    input shape, and predicting `num_classes` classes."""
    path = Path(path)
    where = repr(str(path))
    kind = sniff(path)
    if kind == "aoti":
        raise UserError(f"{where} is a compiled AOTInductor package, not a torch.export program")
    if kind != "torch.export":
        raise UserError(f"{where} is not a torch.export program (.pt2)")
    _check_archive(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise UserError(f"{where}: torch.export.load failed ({_reason(exc)})") from None
    teacher = ExportedTeacher(program, path)
    shape = tuple(input_shape)
    for batch in (1, 3):
        try:
            with torch.no_grad():
                logits = teacher(torch.zeros(batch, *shape))
        except UserError:
            raise
        except Exception as exc:
            raise UserError(
                f"teacher {where} does not run on a batch of {batch} {shape} images ({_reason(exc)}); "
                "export it at the data's image size with a dynamic batch dimension "
                "(dynamic_shapes={'x': {0: torch.export.Dim('batch')}})"
            ) from None
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (batch, num_classes):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise UserError(
                f"teacher {where} outputs {got} for {batch} images, not ({batch}, {num_classes}) logits: "
                f"a teacher must predict the data set's {num_classes} classes"
            )
    return teacher, Provenance(os.path.abspath(path), "torch.export", sha256_file(path))
