"""Triton's classification extension: an output requested with `classification: k` comes back
as its k largest values, each as the BYTES string "<value>:<index>" or, when the output's
`label_filename` names a labels file in the model directory, "<value>:<index>:<label>".

For a batched model each row is classified on its own (shape [batch, k]); otherwise the whole
output is (shape [k]). k larger than the number of classes gives them all. Values are written
as Triton writes them (C++ std::to_string: six decimals for floats).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtimes.errors import InvalidInputError


def class_count(value: object, output: str) -> int:
    """The k of a `classification` parameter: a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(
            f"output '{output}': classification must be a positive integer, got {value!r}"
        )
    return value


def classify(
    values: np.ndarray, k: int, labels: Sequence[str], *, batched: bool, output: str
) -> np.ndarray:
    """The top-k entries of `values` (per row when `batched`) as BYTES strings."""
    if values.dtype.kind not in "biuf":
        raise InvalidInputError(
            f"output '{output}': classification needs a numeric output, not {values.dtype}"
        )
    rows = values.reshape(len(values), -1) if batched else values.reshape(1, -1)
    k = min(k, rows.shape[1])
    # A stable sort of the negated values: equal values keep index order, as Triton's does.
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :k]
    as_float = values.dtype.kind == "f"
    answer = np.empty((len(rows), k), dtype=object)
    for row_index, (row, indices) in enumerate(zip(rows, order, strict=True)):
        for rank, index in enumerate(indices):
            value = f"{row[index]:f}" if as_float else str(int(row[index]))
            text = f"{value}:{index}"
            if index < len(labels):
                text += f":{labels[index]}"
            answer[row_index, rank] = text.encode()
    return answer if batched else answer[0]
