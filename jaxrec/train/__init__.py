"""The one training loop (trainer.py), the task interface its models plug into, losses, optimizers
and checkpoints."""
