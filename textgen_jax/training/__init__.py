"""Training: the loop, its state and steps, partitioning, optimizer, checkpoints, metrics."""
