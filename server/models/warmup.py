"""Warm-up runs a new model version before it takes traffic, so the first requests after a load
or a swap do not pay for onnxruntime's lazy initialisation.

A config's `model_warmup` entries (Triton's format: zero_data, random_data or input_data_file
per input, batch_size, count) are run as given, and a failure fails the load. Without them, one
default sample per instance runs (batch 1, variable dimensions 1, zeros); a model that cannot
take zeros only gets a warning, since the default sample is a guess.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtimes import datatypes
from runtimes.base import Runtime, TensorSpec
from runtimes.errors import ModelLoadError
from server._proto import model_config_pb2 as mc
from server.models.config import ModelSignature

log = logging.getLogger(__name__)


def warm_up(
    name: str,
    instances: Sequence[Runtime],
    config: mc.ModelConfig,
    signature: ModelSignature,
    model_dir: Path,
) -> None:
    """Run warm-up samples on every instance; ModelLoadError if a configured one fails."""
    output_names = [spec.name for spec in signature.outputs]
    if not config.model_warmup:
        sample = _default_sample(signature)
        for instance in instances:
            try:
                instance.infer(instance.prepare(sample), output_names)
            except Exception as exc:  # a guess at valid input; the model may still be fine
                log.warning("model '%s': default warm-up sample failed: %s", name, exc)
                return
        return
    for warmup in config.model_warmup:
        sample = _configured_sample(name, warmup, signature, model_dir)
        for instance in instances:
            for _ in range(max(1, warmup.count)):
                try:
                    instance.infer(instance.prepare(sample), output_names)
                except Exception as exc:
                    raise ModelLoadError(
                        f"model '{name}': warm-up '{warmup.name}' failed: {exc}"
                    ) from exc


def _default_sample(signature: ModelSignature) -> dict[str, np.ndarray]:
    return {
        spec.name: _fill(spec.datatype, _concrete(signature.full_shape(spec)), zeros=True)
        for spec in signature.inputs
    }


def _configured_sample(
    name: str, warmup: mc.ModelWarmup, signature: ModelSignature, model_dir: Path
) -> dict[str, np.ndarray]:
    specs: dict[str, TensorSpec] = {spec.name: spec for spec in signature.inputs}
    sample = {}
    for input_name, given in warmup.inputs.items():
        if input_name not in specs:
            raise ModelLoadError(
                f"model '{name}': warm-up '{warmup.name}' names unknown input '{input_name}'"
            )
        datatype = datatypes.BY_CONFIG[mc.DataType.Name(given.data_type)]
        shape = tuple(given.dims)
        if signature.max_batch_size > 0:
            shape = (max(1, warmup.batch_size), *shape)
        choice = given.WhichOneof("input_data_type")
        if choice == "input_data_file":
            if datatype.is_bytes:
                raise ModelLoadError(
                    f"model '{name}': warm-up files for BYTES inputs are not supported"
                )
            path = model_dir / "warmup" / given.input_data_file
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise ModelLoadError(
                    f"model '{name}': warm-up file {path.name} cannot be read: {exc}"
                ) from exc
            one_row = np.frombuffer(raw, dtype=datatype.numpy).reshape(given.dims)
            sample[input_name] = np.broadcast_to(one_row, shape).copy()
        else:
            sample[input_name] = _fill(datatype.name, shape, zeros=choice != "random_data")
    missing = sorted(set(specs) - set(sample))
    if missing:
        raise ModelLoadError(
            f"model '{name}': warm-up '{warmup.name}' has no data for input(s) {missing}"
        )
    return sample


def _concrete(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if d < 0 else d for d in shape)


def _fill(datatype: str, shape: tuple[int, ...], *, zeros: bool) -> np.ndarray:
    row = datatypes.BY_NAME[datatype]
    if row.is_bytes:
        return np.full(shape, b"", dtype=object)
    if zeros:
        return np.zeros(shape, dtype=row.numpy)
    rng = np.random.default_rng(0)
    return rng.random(shape).astype(row.numpy)
