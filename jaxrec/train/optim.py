"""optax optimizer from the config: AdamW with linear warm-up, cosine decay and clipping."""

from __future__ import annotations

import jax
import optax

from jaxrec.errors import UserError


def learning_rate_schedule(cfg, num_steps: int) -> optax.Schedule:
  if cfg.schedule == "constant":
    return optax.constant_schedule(cfg.learning_rate)
  if cfg.schedule == "cosine":
    warmup = min(cfg.warmup_steps, max(num_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, warmup, max(num_steps, warmup + 1),
        end_value=cfg.learning_rate * cfg.end_learning_rate_factor)
  raise UserError(f"unknown optimizer.schedule {cfg.schedule!r}: use 'cosine' or 'constant'.")


def build_optimizer(cfg, num_steps: int) -> optax.GradientTransformation:
  if cfg.learning_rate <= 0:
    raise UserError(f"optimizer.learning_rate must be > 0, got {cfg.learning_rate}.")
  # Decay matrices only: biases, LayerNorm scales and offsets keep their values.
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
  parts.append(optax.adamw(learning_rate_schedule(cfg, num_steps), b1=cfg.b1, b2=cfg.b2,
                           weight_decay=cfg.weight_decay, mask=decay_mask))
  return optax.chain(*parts)
