import numpy as np
import pytest

from jaxrec.data.vocab import FIRST_ID, OOV, PAD, Vocabulary


@pytest.mark.parametrize("values", [np.array([30, 10, 30, 20, 30, 10]),
                                    np.array(["c", "a", "c", "b", "c", "a"])])
def test_ids_are_contiguous_by_frequency_with_reserved_pad_and_oov(values):
  vocab = Vocabulary.build(values)
  assert PAD == 0 and OOV == 1 and FIRST_ID == 2
  ids = vocab.lookup(values)
  assert sorted(set(ids.tolist())) == [2, 3, 4]
  assert ids[0] == 2  # the most frequent value gets the first id
  assert list(vocab.counts) == [3, 2, 1]
  assert np.array_equal(vocab.raw(ids), values)
  assert len(vocab) == 5 and vocab.num_known == 3


def test_unknown_values_map_to_oov():
  vocab = Vocabulary.build(np.array([1, 2, 2]))
  assert vocab.lookup(np.array([2, 99, 1])).tolist() == [2, OOV, 3]
  assert vocab.lookup(np.array(["not-an-int"])).tolist() == [OOV]
  with pytest.raises(ValueError):
    vocab.raw(np.array([OOV]))


@pytest.mark.parametrize("values", [np.array([7, 5, 5, 123456789012]), np.array(["x", "y", "y"])])
def test_round_trip_is_exact(values, tmp_path):
  vocab = Vocabulary.build(values, extra_ids=values[:1])
  path = str(tmp_path / "v.npz")
  vocab.save(path)
  loaded = Vocabulary.load(path)
  assert loaded == vocab
  assert loaded.raw_ids.dtype == vocab.raw_ids.dtype
  assert np.array_equal(loaded.lookup(values), vocab.lookup(values))


def test_extra_ids_are_known_with_zero_count():
  vocab = Vocabulary.build(np.array([1, 1]), extra_ids=np.array([1, 5]))
  assert vocab.raw_ids.tolist() == [1, 5]
  assert vocab.count_table().tolist() == [0, 0, 2, 0]
