"""One Trainer for every method, with checkpoints, resume, AMP, DDP and progress reporting."""
