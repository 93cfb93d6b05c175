"""Structured pruning of a trained network to a target width or depth (Torch-Pruning), with every channel
count rounded to a divisor: `width.prune_width`, `depth.prune_depth`, `calibrate.recalibrate_bn`."""
