"""Flax NNX models. Parameters carry logical axis names ("vocab", "embed", "mlp", "heads") that
the partitioner maps onto the device mesh."""
