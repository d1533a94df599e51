"""Online serving: the HTTP service, its request batcher, the bundle's models and recommender, and a
load generator."""
