"""The training core of kdforge: config, data, models, methods (one file each) and the Trainer."""

# Imported as a top-level `compress` (a checkout's root on sys.path): refuse, this is kdforge.compress.
if __name__ != "kdforge.compress":
    raise ImportError(f"this folder is kdforge.compress: import kdforge.compress, not {__name__}")

from kdforge.compress.errors import UserError

__all__ = ["UserError"]
