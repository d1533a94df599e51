"""Multi-task DLRM on a TPU v5e-8 (one host, 8 chips): synthetic impressions of 1M users x 1M
items, 64-wide tables split row-wise over 4 chips, the batch over 2.

  python launchers/tpu.py create --config configs/tpu_v5e_8_dlrm.py --spot
  python launchers/tpu.py run --config configs/tpu_v5e_8_dlrm.py --workdir gs://BUCKET/dlrm-v5e
  python launchers/tpu.py logs --config configs/tpu_v5e_8_dlrm.py
  python launchers/tpu.py delete --config configs/tpu_v5e_8_dlrm.py

The host generates the seeded dataset into data.dir on first use.
"""

import ml_collections

from jaxrec.train.defaults import tpu_ranking_config, variant


def get_config(arg=None):
  config = tpu_ranking_config(users=1_000_000, items=1_000_000, events=50_000_000, mesh=(2, 4),
                              batch_size=16_384)
  config.tpu = ml_collections.ConfigDict({
      "name": "jaxrec-dlrm-v5e-8", "zone": "us-west4-a", "accelerator_type": "v5litepod-8",
      "runtime_version": "v2-alpha-tpuv5-lite"})
  return variant(config, arg)
