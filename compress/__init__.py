"""The training core of kdforge: config, data, models, methods (one file each) and the Trainer."""

from compress.errors import UserError

__all__ = ["UserError"]
