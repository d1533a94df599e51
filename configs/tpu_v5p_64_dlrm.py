"""Multi-task DLRM on a TPU v5p-64 pod slice (8 hosts x 4 chips): synthetic impressions of 10M
users x 2M items, tables split row-wise over 8 chips, the batch over 4 groups of them.

  python launchers/tpu.py create --config configs/tpu_v5p_64_dlrm.py
  python launchers/tpu.py run --config configs/tpu_v5p_64_dlrm.py --workdir gs://BUCKET/dlrm-v5p

All hosts run the same command: `jaxrec train` joins them (jax.distributed.initialize), each
generates the same seeded dataset and reads its own share, and the checkpoint goes to the
shared gs:// workdir.
"""

import ml_collections

from jaxrec.train.defaults import tpu_ranking_config, variant


def get_config(arg=None):
  config = tpu_ranking_config(users=10_000_000, items=2_000_000, events=500_000_000,
                              mesh=(4, 8), batch_size=65_536)
  config.tpu = ml_collections.ConfigDict({
      "name": "jaxrec-dlrm-v5p-64", "zone": "us-east5-a", "accelerator_type": "v5p-64",
      "runtime_version": "v2-alpha-tpuv5"})
  return variant(config, arg)
