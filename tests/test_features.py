import numpy as np

from jaxrec.data.events import SideTable
from jaxrec.data.features import NUMERIC_MIN_DISTINCT, categorical, encode_side_table
from jaxrec.data.vocab import Vocabulary


def test_categorical_keeps_the_id_columns_and_drops_numbers():
  n = NUMERIC_MIN_DISTINCT  # enough distinct release times to be kept as numbers
  ids = np.arange(n, dtype=np.int64)
  table = SideTable(ids=ids, columns={
      "genres": np.array(["Drama|Comedy", "Drama"] * (n // 2)),
      "released": np.arange(n).astype(str)}, multi_valued=("genres",))
  arrays, vocabs = encode_side_table(table, Vocabulary.build(ids))
  assert arrays["released"].dtype != np.int32 and "released" not in vocabs
  chosen = categorical(arrays)
  assert list(chosen) == ["genres"]
  assert chosen["genres"] is arrays["genres"] and chosen["genres"].dtype == np.int32
