"""Run by torchrun from test_ddp.py: trains the tiny teacher with DDP (gloo) and dumps each rank's weights."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
from kdforge.compress.config import MethodConfig
from kdforge.compress.data import build_data
from kdforge.compress.methods import build_method
from kdforge.compress.models import build
from kdforge.compress.train.distributed import init_distributed, shutdown
from kdforge.compress.train.meta import network_meta
from kdforge.compress.train.trainer import Trainer
from safetensors.torch import save_file

from tests.compress.conftest import tiny_config


def main(out: Path) -> None:
    torch.set_num_threads(1)
    config = tiny_config("teacher_train.epochs=2", "data.batch_size=16")
    context = init_distributed("cpu", timeout_s=120)
    data = build_data(config.data)
    torch.manual_seed(config.seed + 1000 * context.rank)  # different initial weights: DDP must sync them
    method = build_method(MethodConfig("ce"), build(config.teacher.arch, data.num_classes), None)
    trainer = Trainer(
        method,
        data,
        config.teacher_train,
        out,
        seed=config.seed,
        device=torch.device("cpu"),
        meta=network_meta(config.teacher, data, "teacher", "ce", config),
        context=context,
        progress=False,
    )
    trainer.fit()
    state = {k: v.contiguous() for k, v in method.deliverable().state_dict().items()}
    save_file(state, str(out / f"rank{context.rank}.safetensors"))
    shutdown(context)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
