"""The pieces of serving/model_process.py that need no bundle: the CPU split, pinning every thread
of a process, and the replicated exploration counts."""

import os
import subprocess
import sys

import numpy as np
import pytest

from jaxrec.errors import UserError
from jaxrec.rerank.posteriors import BetaPosteriors
from serving.model_process import ReplicatedPosteriors, may_restore_priority, place, split_cpus


def test_loading_gets_a_quarter_of_the_cpus_and_at_least_one():
  assert split_cpus({3}) is None
  assert split_cpus({0, 1}) == ({0}, {1})
  assert split_cpus(set(range(8))) == (set(range(6)), {6, 7})
  assert split_cpus({0, 2, 5}) == ({0, 2}, {5})


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU sets and two CPUs")
def test_place_moves_and_renices_every_thread_of_a_process():
  child = subprocess.Popen([sys.executable, "-c", "import threading, time\n"
                            "threading.Thread(target=time.sleep, args=(60,)).start()\n"
                            "print(flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
  try:
    child.stdout.readline()  # its second thread runs
    one = {min(os.sched_getaffinity(0))}
    place(child.pid, one, 7)
    threads = [int(t) for t in os.listdir(f"/proc/{child.pid}/task")]
    assert len(threads) == 2
    assert all(os.sched_getaffinity(t) == one for t in threads)
    assert all(os.getpriority(os.PRIO_PROCESS, t) == 7 for t in threads)
    place(child.pid, os.sched_getaffinity(0))
    assert all(os.sched_getaffinity(t) == os.sched_getaffinity(0) for t in threads)
    if may_restore_priority():
      place(child.pid, nice=0)
      assert all(os.getpriority(os.PRIO_PROCESS, t) == 0 for t in threads)
  finally:
    child.kill()
    child.wait()


def test_replicas_get_the_counts_then_every_later_update_and_no_refused_one():
  counts = ReplicatedPosteriors(BetaPosteriors(0)).for_catalogue(["", "", "a", "b", "c"])
  counts.update([2, 3], [4, 1], [1, 0])
  state, queue = counts.subscribe()
  np.testing.assert_array_equal(state["impressions"], [0, 0, 4, 1, 0])
  counts.update([4], [2], [2])
  with pytest.raises(UserError):
    counts.update([4], [1], [2])  # more engagements than impressions: refused, not queued
  replica = BetaPosteriors.from_state_dict(state)
  for update in counts.take(queue):
    replica.update(*update)
  np.testing.assert_array_equal(replica.impressions([2, 3, 4]), counts.impressions([2, 3, 4]))
  np.testing.assert_array_equal(replica.engagements([2, 3, 4]), [1, 0, 2])
  assert counts.take(queue) == []
  counts.unsubscribe(queue)
  counts.update([2], [1], [0])
  assert counts.take(queue) == []
