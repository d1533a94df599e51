"""Evaluation: ranking metrics and the protocols that feed them."""
