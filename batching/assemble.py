"""Build one batch from many requests and split the results back, checking the row contract."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from batching.request import PendingRequest
from runtimes.errors import ModelExecutionError


def concatenate(
    requests: Sequence[PendingRequest], padded_inputs: frozenset[str], pad_value: int
) -> dict[str, np.ndarray]:
    """Stack every input along the batch dimension, padding the paddable ones to the longest.

    A batch of one request passes its arrays through untouched (no copy).
    """
    if len(requests) == 1:
        return requests[0].inputs
    batched: dict[str, np.ndarray] = {}
    for name in requests[0].inputs:
        parts = [request.inputs[name] for request in requests]
        if name in padded_inputs and len({part.shape[1:] for part in parts}) > 1:
            batched[name] = _pad_and_stack(parts, pad_value)
        else:
            batched[name] = np.concatenate(parts, axis=0)
    return batched


def _pad_and_stack(parts: Sequence[np.ndarray], pad_value: int) -> np.ndarray:
    rows = sum(part.shape[0] for part in parts)
    longest = tuple(max(dims) for dims in zip(*(part.shape[1:] for part in parts), strict=True))
    out = np.full((rows, *longest), pad_value, dtype=parts[0].dtype)
    start = 0
    for part in parts:
        region = (slice(start, start + part.shape[0]), *(slice(0, d) for d in part.shape[1:]))
        out[region] = part
        start += part.shape[0]
    return out


def split(
    outputs: Mapping[str, np.ndarray],
    requests: Sequence[PendingRequest],
    *,
    model_name: str,
    batch_rows: int,
    padded_inputs: frozenset[str],
    sliced_outputs: frozenset[str],
) -> list[dict[str, np.ndarray]]:
    """Give each request its own rows (views, no copy) of the outputs it asked for.

    Outputs named in `sliced_outputs` are cut back, dimension by dimension, to the request's own
    lengths of its first padded input.
    """
    if len(requests) == 1 and not sliced_outputs:
        return [_whole(outputs, requests[0], model_name, batch_rows)]
    missing = {name for request in requests for name in request.output_names} - outputs.keys()
    _check_contract(outputs, missing, model_name, batch_rows)
    results = []
    start = 0
    for request in requests:
        stop = start + request.rows
        own_lengths = _own_lengths(request, padded_inputs)
        result = {}
        for name in request.output_names:
            value = outputs[name][start:stop]
            if own_lengths and name in sliced_outputs:
                lengths = own_lengths[: value.ndim - 1]
                value = value[(slice(None), *(slice(0, n) for n in lengths))]
            result[name] = value
        results.append(result)
        start = stop
    return results


def _whole(
    outputs: Mapping[str, np.ndarray], request: PendingRequest, model_name: str, batch_rows: int
) -> dict[str, np.ndarray]:
    """A batch of one request: its outputs as they are, once the row contract holds."""
    missing = set(request.output_names) - outputs.keys()
    _check_contract(outputs, missing, model_name, batch_rows)
    return {name: outputs[name] for name in request.output_names}


def _check_contract(
    outputs: Mapping[str, np.ndarray], missing: set[str], model_name: str, batch_rows: int
) -> None:
    """Every requested output is there, with one row per input row."""
    if missing:
        raise ModelExecutionError(
            f"model '{model_name}' did not return output(s) {sorted(missing)}"
        )
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != batch_rows:
            shape = "a scalar" if value.ndim == 0 else f"{value.shape[0]} rows"
            raise ModelExecutionError(
                f"model '{model_name}' returned {shape} for output '{name}' "
                f"from a batch of {batch_rows} rows"
            )


def _own_lengths(request: PendingRequest, padded_inputs: frozenset[str]) -> tuple[int, ...]:
    for name in sorted(padded_inputs):
        if name in request.inputs:
            return request.inputs[name].shape[1:]
    return ()
