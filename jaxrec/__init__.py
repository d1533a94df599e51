"""jaxrec: a JAX/TPU-native recommender system, from event logs to served recommendations."""

__version__ = "0.1.0"
