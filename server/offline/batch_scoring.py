"""`tensorgate batch`: offline batch scoring of a file through a model, without gRPC.

The model is opened through the server's loader (server/offline/loading.py: the same runtime,
options and completed config) and runs in large batches on one instance, which is as close to the
in-process ceiling as a file allows.

Files, by extension:

- .npy: one array, the model's only input (rows along the first axis); read memory-mapped.
- .npz: one array per input, by input name.
- .csv (header row) and .parquet, for models whose inputs have fixed dimensions: an input is
  the column named after it (a scalar per row; in Parquet also a list column), or the columns
  `<input>_0` .. `<input>_<K-1>` (K = the product of its dimensions, row-major), or, for a model
  with one input, every column of the file in order.

An array of another numeric type than the model's is converted only when every value survives
the conversion exactly (as the server, which refuses FP64 for FP32, never scores other numbers
than were sent); CSV text is parsed straight into the model's types.

Outputs are written in the output file's format: .npz with one array per output, .npy with the
one output (use --outputs to pick it), .csv/.parquet with the columns named as above.

Work is done in chunks; finished chunks are saved in `<output>.partial/` (every couple of
seconds, and when the run stops) until the run ends, so a run that stopped (a crash, Ctrl-C, a
bad row) continues with --resume where it was. A row that the model cannot take fails the run
with its place: the line in a CSV file (the header is line 1), the row index (from 0) otherwise.
"""

from __future__ import annotations

import importlib
import itertools
import json
import logging
import math
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import BinaryIO, Protocol

import numpy as np
from numpy.typing import DTypeLike

from runtimes import datatypes
from runtimes.base import Runtime, TensorSpec
from runtimes.errors import InvalidInputError, ModelExecutionError, TensorgateError
from server.dataplane.validation import shape_matches
from server.models.config import ModelSignature
from server.offline import loading as offline

log = logging.getLogger(__name__)

FORMATS = (".npy", ".npz", ".csv", ".parquet")
TABULAR = (".csv", ".parquet")
CHUNK_BYTES = 8 << 20  # input bytes per chunk when --batch-size is not given
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 64, 65536
MANIFEST = "manifest.json"
CHECKPOINT_S = 2.0  # most work an interrupted run loses


class BatchScoringError(TensorgateError):
    """A problem with the job (its files, its options) of `batch` or `profile`; the message
    says what to change."""

    kind = InvalidInputError.kind


@dataclass(frozen=True)
class BatchJob:
    model: str
    input_path: Path
    output_path: Path
    model_repository: Path
    version: int | None = None
    batch_rows: int = 0  # 0: chosen from the row size
    outputs: tuple[str, ...] = ()  # empty: every output
    resume: bool = False
    progress: bool = True
    default_max_batch_size: int = 32


@dataclass(frozen=True)
class BatchResult:
    rows: int
    scored_rows: int  # by this run; the rest came from an earlier one (--resume)
    seconds: float
    output_path: Path
    version: int

    @property
    def rows_per_s(self) -> float:
        return self.scored_rows / self.seconds if self.seconds > 0 else 0.0


# the job ---------------------------------------------------------------------------------------


class ProgressBar(Protocol):
    """What a run reports its progress to: tqdm's bar, by default."""

    def update(self, rows: int, /) -> object: ...

    def close(self) -> None: ...


def score(job: BatchJob, progress_factory: Callable[..., ProgressBar] | None = None) -> BatchResult:
    """Run the job; raises BatchScoringError (or another TensorgateError) with a clear message.
    progress_factory builds the progress bar (default: tqdm)."""
    output_format = format_of(job.output_path, "output")
    input_format = input_format_of(job.input_path, output_format)
    model = offline.open_model(
        job.model_repository,
        job.model,
        job.version,
        default_max_batch_size=job.default_max_batch_size,
    )
    runtime, signature, version = model.runtime, model.signature, model.version
    try:
        output_names = _output_names(signature, job.outputs, output_format, job.output_path)
        inputs, row_label = read_inputs(job.input_path, input_format, signature)
        rows = check_inputs(inputs, signature, job.input_path, row_label)
        chunk_rows = job.batch_rows or _chunk_rows(inputs)
        partial = _Partial(
            job.output_path,
            {
                "model": job.model,
                "version": version,
                "input": str(job.input_path.resolve()),
                "rows": rows,
                "chunk_rows": chunk_rows,
                "outputs": list(output_names),
            },
            resume=job.resume,
        )
        chunks = range(math.ceil(rows / chunk_rows))

        def chunk_of(index: int) -> dict[str, np.ndarray]:
            start = index * chunk_rows
            return {name: value[start : start + chunk_rows] for name, value in inputs.items()}

        done = partial.done_chunks(len(chunks), chunk_of)
        resumed_rows = sum(min(chunk_rows, rows - i * chunk_rows) for i in done)
        if done:
            log.info("resuming: %d of %d rows already scored", resumed_rows, rows)
        bar = (progress_factory or _tqdm)(
            total=rows,
            initial=resumed_rows,
            unit="rows",
            unit_scale=True,
            desc=f"{job.model} v{version}",
            disable=not job.progress,
        )
        todo = [index for index in chunks if index not in done]

        def prepare(index: int) -> tuple[dict[str, np.ndarray], bytes]:
            part = {name: np.ascontiguousarray(value) for name, value in chunk_of(index).items()}
            return part, _digest(part)

        started = time.perf_counter()
        # A helper thread reads (and fingerprints) the next chunk while the runtime, which
        # releases the GIL, scores the current one.
        with ThreadPoolExecutor(1, thread_name_prefix="batch-read") as reader:
            upcoming = reader.submit(prepare, todo[0]) if todo else None
            try:
                for position, index in enumerate(todo):
                    assert upcoming is not None
                    part, digest = upcoming.result()
                    if position + 1 < len(todo):
                        upcoming = reader.submit(prepare, todo[position + 1])
                    outputs = score_chunk(
                        runtime,
                        signature,
                        part,
                        output_names,
                        index * chunk_rows,
                        row_label,
                        hint="; rows before it are saved (fix the row and rerun with --resume)",
                    )
                    partial.add(index, outputs, digest)
                    bar.update(len(next(iter(part.values()))))
            finally:
                partial.save()  # what was scored is kept, whatever stopped the run
                bar.close()
        seconds = time.perf_counter() - started
        write_outputs(job.output_path, output_format, partial.outputs(len(chunks), output_names))
        partial.remove()
    finally:
        runtime.close()
    return BatchResult(rows, rows - resumed_rows, seconds, job.output_path, version)


def _tqdm(**kwargs: object) -> ProgressBar:
    from tqdm import tqdm

    bar: ProgressBar = tqdm(**kwargs, dynamic_ncols=True, smoothing=0.1)
    return bar


def load_model(
    model_repository: Path, name: str, version: int | None, default_max_batch_size: int = 32
) -> tuple[Runtime, ModelSignature, int]:
    """offline.open_model as (runtime, signature, version), for benchmarks/batch_scoring.py."""
    model = offline.open_model(
        model_repository, name, version, default_max_batch_size=default_max_batch_size
    )
    return model.runtime, model.signature, model.version


# scoring ---------------------------------------------------------------------------------------


def score_chunk(
    runtime: Runtime,
    signature: ModelSignature,
    inputs: Mapping[str, np.ndarray],
    output_names: Sequence[str],
    first_row: int,
    row_label: Callable[[int], str],
    hint: str = "",
) -> dict[str, np.ndarray]:
    """The outputs of one chunk; a failure is pinned on the first row that fails alone (its
    message ends with `hint`)."""
    try:
        return _run(runtime, signature, inputs, output_names)
    except TensorgateError as error:
        rows = len(next(iter(inputs.values())))
        for offset in range(rows):
            single = {name: value[offset : offset + 1] for name, value in inputs.items()}
            try:
                _run(runtime, signature, single, output_names)
            except TensorgateError as row_error:
                raise BatchScoringError(
                    f"{row_label(first_row + offset)}: {row_error}{hint}"
                ) from row_error
        raise BatchScoringError(
            f"{row_label(first_row)} to {row_label(first_row + rows - 1)} failed together: {error}"
        ) from error


def _run(
    runtime: Runtime,
    signature: ModelSignature,
    inputs: Mapping[str, np.ndarray],
    output_names: Sequence[str],
) -> dict[str, np.ndarray]:
    feeds = {name: np.ascontiguousarray(value) for name, value in inputs.items()}
    if signature.max_batch_size > 0:
        outputs = runtime.infer(runtime.prepare(feeds), output_names)
    else:  # the model takes one item at a time: the file's rows are separate requests
        rows = len(next(iter(feeds.values())))
        parts = [
            runtime.infer(runtime.prepare({n: v[i] for n, v in feeds.items()}), output_names)
            for i in range(rows)
        ]
        outputs = {name: np.stack([part[name] for part in parts]) for name in output_names}
    rows = len(next(iter(feeds.values())))
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != rows:
            raise ModelExecutionError(
                f"the model returned {value.shape[0] if value.ndim else 0} rows of output "
                f"'{name}' for {rows} input rows"
            )
    return outputs


def _output_names(
    signature: ModelSignature, requested: Sequence[str], output_format: str, path: Path
) -> tuple[str, ...]:
    names = [spec.name for spec in signature.outputs]
    unknown = [name for name in requested if name not in names]
    if unknown:
        raise BatchScoringError(f"the model has no output '{unknown[0]}'; its outputs are {names}")
    chosen = tuple(requested) or tuple(names)
    if output_format == ".npy" and len(chosen) != 1:
        raise BatchScoringError(
            f"{path.name}: an .npy file holds one array but the model has outputs {names}; "
            "name one with --outputs, or write an .npz"
        )
    if output_format in TABULAR:
        specs = {spec.name: spec for spec in signature.outputs}
        for name in chosen:
            if any(d < 0 for d in specs[name].shape):
                raise BatchScoringError(
                    f"output '{name}' has variable dimensions {list(specs[name].shape)}, which "
                    f"a {output_format} file cannot hold; write an .npz"
                )
    return chosen


def check_inputs(
    inputs: dict[str, np.ndarray],
    signature: ModelSignature,
    path: Path,
    row_label: Callable[[int], str],
) -> int:
    """Check every array against the model (shape, dtype, rows) before any work, converting
    dtypes where every value survives exactly (logged once); returns the row count."""
    specs = {spec.name: spec for spec in signature.inputs}
    rows_by_input: dict[str, int] = {}
    converted = []
    for name, value in list(inputs.items()):
        spec = specs[name]
        if value.ndim == 0 or not shape_matches(value.shape[1:], spec.shape):
            dims = ", ".join(["rows", *(str(d) for d in spec.shape)])
            raise BatchScoringError(
                f"{path.name}: input '{name}' has shape {list(value.shape)}, but the model "
                f"expects [{dims}]"
            )
        expected = datatypes.BY_NAME[spec.datatype]
        if expected.is_bytes:
            if value.dtype.kind not in "OSU":
                raise BatchScoringError(
                    f"{path.name}: input '{name}' holds {value.dtype} values, but the model "
                    "expects text (BYTES)"
                )
            if value.dtype.kind != "O":
                inputs[name] = value.astype(object)
        elif value.dtype != expected.numpy:
            if value.dtype.kind in "OSUcmMV" and value.dtype != datatypes.BY_NAME["BF16"].numpy:
                raise BatchScoringError(
                    f"{path.name}: input '{name}' holds {value.dtype} values, but the model "
                    f"expects {spec.datatype}"
                )
            inputs[name] = _exact_cast(value, spec, path, row_label)
            converted.append(f"'{name}' from {value.dtype} to {spec.datatype}")
        rows_by_input[name] = value.shape[0]
    if len(set(rows_by_input.values())) > 1:
        raise BatchScoringError(f"{path.name}: inputs disagree on the row count: {rows_by_input}")
    rows = next(iter(rows_by_input.values()))
    if rows == 0:
        raise BatchScoringError(f"{path.name} has no rows")
    if converted:
        log.info("%s: converted input %s (every value unchanged)", path.name, ", ".join(converted))
    return rows


CAST_BLOCK_ELEMENTS = 1 << 22  # bounds the memory the exactness check adds


def _exact_cast(
    value: np.ndarray, spec: TensorSpec, path: Path, row_label: Callable[[int], str]
) -> np.ndarray:
    """`value` as the model's dtype, or BatchScoringError naming a value the cast would change
    (a value that does not come back the same from the model's dtype)."""
    dtype = datatypes.BY_NAME[spec.datatype].numpy
    cast = np.empty(value.shape, dtype)
    step = max(1, CAST_BLOCK_ELEMENTS // max(1, math.prod(value.shape[1:])))
    for start in range(0, len(value), step):
        part = value[start : start + step]
        block = cast[start : start + step]
        with np.errstate(invalid="ignore", over="ignore"):
            block[...] = part.astype(dtype)
            back = block.astype(value.dtype)
        changed = back != part
        if value.dtype.kind not in "biu":  # NaN stays NaN
            changed &= ~(np.isnan(back) & np.isnan(part))
        if changed.any():
            where = np.unravel_index(np.flatnonzero(changed)[0], part.shape)
            raise BatchScoringError(
                f"{path.name}: input '{spec.name}' holds {value.dtype} values, but the model "
                f"expects {spec.datatype}, and converting would change values: "
                f"{row_label(start + int(where[0]))} has {part[where].item()!r}, which would "
                f"become {block[where].item()!r}; convert the file to {dtype} if that "
                "is intended"
            )
    return cast


def _chunk_rows(inputs: Mapping[str, np.ndarray]) -> int:
    row_bytes = sum(
        math.prod(value.shape[1:]) * (value.itemsize if value.dtype.kind != "O" else 64)
        for value in inputs.values()
    )
    return max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, CHUNK_BYTES // max(1, row_bytes)))


def format_of(path: Path, role: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise BatchScoringError(
            f"{role} file {path.name}: unknown format '{suffix or 'no extension'}'; "
            f"expected one of {', '.join(FORMATS)}"
        )
    return suffix


def input_format_of(path: Path, *other_formats: str) -> str:
    """The input file's format, once the file exists and the libraries of its format and of
    `other_formats` (the output's) are installed: checked before any work or file written."""
    file_format = format_of(path, "input")
    if ".parquet" in (file_format, *other_formats):
        _pyarrow_parquet()
    if not path.is_file():
        raise BatchScoringError(f"input file {path} does not exist")
    return file_format


# partial results (resume) -------------------------------------------------------------------


class _Partial:
    """Finished chunks of a run, kept beside the output until the run completes."""

    def __init__(self, output: Path, manifest: dict[str, object], *, resume: bool) -> None:
        self.path = output.with_name(output.name + ".partial")
        self.results: dict[int, dict[str, np.ndarray]] = {}
        self._unsaved: list[tuple[int, dict[str, np.ndarray], bytes]] = []
        self._saved_at = time.monotonic()
        manifest_path = self.path / MANIFEST
        if self.path.exists():
            if resume and manifest_path.is_file():
                earlier = json.loads(manifest_path.read_text(encoding="utf-8"))
                differs = sorted(k for k in manifest if earlier.get(k) != manifest[k])
                if differs:
                    raise BatchScoringError(
                        f"cannot resume: the partial results in {self.path} were made with a "
                        f"different {', '.join(differs)}; remove that directory or run "
                        "without --resume"
                    )
                return
            log.info("discarding the partial results of an earlier run in %s", self.path)
            shutil.rmtree(self.path)
        elif resume:
            log.info("nothing to resume in %s; starting from the beginning", self.path)
        self.path.mkdir(parents=True)
        _write_atomically(manifest_path, lambda f: f.write(json.dumps(manifest).encode()))

    def done_chunks(
        self, count: int, chunk_of: Callable[[int], Mapping[str, np.ndarray]]
    ) -> set[int]:
        """Chunks already scored from the same input rows (a chunk whose rows changed since,
        say a fixed bad row, is scored again); their outputs are kept for the end."""
        for path in sorted(self.path.glob("part-*.npz")):
            with np.load(path, allow_pickle=True) as part:
                arrays = {name: part[name] for name in part.files}
            indices, rows, digests = (arrays.pop(key) for key in _BOOKKEEPING)
            starts = np.concatenate([[0], np.cumsum(rows)])
            for position, index in enumerate(indices.tolist()):
                if index >= count:
                    continue
                if digests[position].tobytes() != _digest(chunk_of(index)):
                    log.info("chunk %d: its input rows changed since it was scored", index)
                    continue
                start, stop = starts[position], starts[position + 1]
                self.results[index] = {name: value[start:stop] for name, value in arrays.items()}
        return set(self.results)

    def add(self, index: int, outputs: dict[str, np.ndarray], digest: bytes) -> None:
        """Keep a chunk's outputs; save the unsaved ones every CHECKPOINT_S seconds, in one
        file, so that bookkeeping stays small next to scoring even for a tiny model."""
        self.results[index] = outputs
        self._unsaved.append((index, outputs, digest))
        if time.monotonic() - self._saved_at >= CHECKPOINT_S:
            self.save()

    def save(self) -> None:
        if not self._unsaved:
            return
        unsaved, self._unsaved = self._unsaved, []
        names = list(unsaved[0][1])
        arrays = {
            name: _concatenate([outputs[name] for _, outputs, _ in unsaved]) for name in names
        }
        indices = [index for index, _, _ in unsaved]
        arrays[_BOOKKEEPING[0]] = np.array(indices, np.int64)
        arrays[_BOOKKEEPING[1]] = np.array([len(o[names[0]]) for _, o, _ in unsaved], np.int64)
        arrays[_BOOKKEEPING[2]] = np.array([np.frombuffer(d, np.uint8) for _, _, d in unsaved])
        path = self.path / f"part-{indices[0]:08d}-{indices[-1]:08d}.npz"
        _write_atomically(path, lambda f: _savez(f, arrays))
        self._saved_at = time.monotonic()

    def outputs(self, count: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        return {
            name: _concatenate([self.results[index][name] for index in range(count)])
            for name in names
        }

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


_BOOKKEEPING = ("__tensorgate_chunks__", "__tensorgate_rows__", "__tensorgate_digests__")


def _digest(inputs: Mapping[str, np.ndarray]) -> bytes:
    """A fingerprint of a chunk's input rows, to tell whether saved results still apply: a
    CRC-32 (a change detector, not a defence; about 4 GB/s) with the names, types and shapes."""
    crc = 0
    for name, value in inputs.items():
        crc = zlib.crc32(f"{name}:{value.dtype.str}:{value.shape}".encode(), crc)
        if value.dtype == object:
            for item in value.ravel():
                data = item.encode("utf-8", "surrogateescape") if isinstance(item, str) else item
                crc = zlib.crc32(len(data).to_bytes(8, "little") + bytes(data), crc)
        else:
            crc = zlib.crc32(np.ascontiguousarray(value).view(np.uint8).data, crc)
    return crc.to_bytes(4, "little")


def _concatenate(values: list[np.ndarray]) -> np.ndarray:
    """Chunks of a variable-length output may differ in their later dimensions: pad with 0."""
    if len({value.shape[1:] for value in values}) <= 1:
        return np.concatenate(values)
    ndim = values[0].ndim
    widest = [max(value.shape[d] for value in values) for d in range(1, ndim)]
    padded = [
        np.pad(value, [(0, 0)] + [(0, w - s) for w, s in zip(widest, value.shape[1:], strict=True)])
        for value in values
    ]
    return np.concatenate(padded)


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        write(file)
    os.replace(temporary, path)


def _savez(file: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """An .npz with one array per name."""
    # mypy matches **arrays against savez's `allow_pickle: bool` as well as its `**kwds`.
    np.savez(file, **arrays)  # type: ignore[arg-type]


# reading ----------------------------------------------------------------------------------------


def read_inputs(
    path: Path, file_format: str, signature: ModelSignature
) -> tuple[dict[str, np.ndarray], Callable[[int], str]]:
    """Arrays by input name (rows first, as the file holds them: check_inputs converts), and
    how to name a row in messages."""
    names = [spec.name for spec in signature.inputs]
    try:
        if file_format == ".npy":
            if len(names) != 1:
                raise BatchScoringError(
                    f"{path.name}: an .npy file holds one array but the model has inputs "
                    f"{names}; use an .npz with one array per input"
                )
            return {names[0]: np.load(path, mmap_mode="r", allow_pickle=False)}, _row
        if file_format == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                missing = [name for name in names if name not in archive.files]
                if missing:
                    raise BatchScoringError(
                        f"{path.name} has no array for input '{missing[0]}'; it has "
                        f"{archive.files}, the model's inputs are {names}"
                    )
                return {name: archive[name] for name in names}, _row
        if file_format == ".csv":
            return _read_csv(path, signature), lambda index: f"line {_csv_line(path, index)}"
        return _read_parquet(path, signature), _row
    except TensorgateError:
        raise
    except (ValueError, OSError, EOFError) as exc:  # numpy's and pyarrow's parse errors
        raise BatchScoringError(f"{path.name} could not be read: {exc}") from exc


def _row(index: int) -> str:
    return f"row index {index}"


def _csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(the line it starts on, its fields) of each data record, as np.loadtxt reads them (the
    header and blank lines skipped). Only read to place an error: np.loadtxt's own row numbers
    skip the header in some messages and not in others."""
    import csv

    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        next(reader, None)
        end = reader.line_num
        for record in reader:
            start, end = end + 1, reader.line_num
            if record:
                yield start, record


def _csv_line(path: Path, index: int) -> int:
    """The line of the file where data row `index` (from 0) starts."""
    return next(itertools.islice(_csv_records(path), index, None), (index + 2, []))[0]


def _csv_value_error(
    path: Path, spec: TensorSpec, columns: list[str], wanted: list[str], dtype: DTypeLike | None
) -> BatchScoringError | None:
    """The first line whose values for `spec` np.loadtxt could not read, and why."""
    indices = [columns.index(name) for name in wanted]
    for line, record in _csv_records(path):
        if len(record) <= max(indices):
            return BatchScoringError(
                f"{path.name}, line {line}: {len(record)} values, but the header names "
                f"{len(columns)} columns"
            )
        for name, index in zip(wanted, indices, strict=True):
            try:
                np.array(record[index]).astype(dtype)
            except (ValueError, OverflowError):
                return BatchScoringError(
                    f"{path.name}, line {line}: bad value for input '{spec.name}' in column "
                    f"'{name}': '{record[index]}' is not {spec.datatype}"
                )
    return None


def _tabular_layout(
    signature: ModelSignature, columns: Sequence[str], path: Path
) -> dict[str, list[str]]:
    """Which columns make up each input (see the module's docstring)."""
    layout = {}
    for spec in signature.inputs:
        if any(d < 0 for d in spec.shape):
            raise BatchScoringError(
                f"input '{spec.name}' has variable dimensions {list(spec.shape)}, which a "
                f"{path.suffix} file cannot hold; use an .npz with one array per input"
            )
        width = math.prod(spec.shape)
        numbered = [f"{spec.name}_{j}" for j in range(width)]
        if spec.name in columns:
            layout[spec.name] = [spec.name]
        elif all(name in columns for name in numbered):
            layout[spec.name] = numbered
        elif len(signature.inputs) == 1 and len(columns) == width:
            layout[spec.name] = list(columns)
        else:
            ways = f"a column '{spec.name}'"
            if width > 1:
                ways += f", columns '{numbered[0]}' to '{numbered[-1]}'"
            if len(signature.inputs) == 1:
                ways += f", or exactly {width} columns"
            shown = ", ".join(columns[:8]) + (", ..." if len(columns) > 8 else "")
            raise BatchScoringError(
                f"{path.name}: no columns for input '{spec.name}' ({spec.datatype}, {width} "
                f"value(s) per row): expected {ways}; the file has {len(columns)} columns: "
                f"{shown}"
            )
    return layout


def _read_csv(path: Path, signature: ModelSignature) -> dict[str, np.ndarray]:
    import csv

    with open(path, newline="", encoding="utf-8") as file:
        header = next(csv.reader(file), None)
    if not header:
        raise BatchScoringError(f"{path.name} is empty; a CSV file needs a header row")
    columns = [name.strip() for name in header]
    layout = _tabular_layout(signature, columns, path)
    inputs = {}
    for spec in signature.inputs:
        datatype = datatypes.BY_NAME[spec.datatype]
        wanted = layout[spec.name]
        if len(wanted) == 1 and math.prod(spec.shape) != 1:
            raise BatchScoringError(
                f"{path.name}: input '{spec.name}' needs {math.prod(spec.shape)} values per row "
                f"but a CSV column holds one; use columns '{spec.name}_0'..."
            )
        dtype = str if datatype.is_bytes else datatype.numpy
        try:
            values = np.loadtxt(
                path,
                delimiter=",",
                skiprows=1,
                usecols=[columns.index(name) for name in wanted],
                dtype=dtype,
                quotechar='"',
                comments=None,  # '#' is text in a CSV value, not the start of a comment
                ndmin=2,
                encoding="utf-8",
            )
        except ValueError as exc:
            error = _csv_value_error(path, spec, columns, wanted, dtype)
            raise error or BatchScoringError(f"{path.name} could not be read: {exc}") from exc
        if datatype.is_bytes:
            values = values.astype(object)
        inputs[spec.name] = values.reshape(len(values), *spec.shape)
    return inputs


def _read_parquet(path: Path, signature: ModelSignature) -> dict[str, np.ndarray]:
    pq = _pyarrow_parquet()
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = pq.read_schema(path)
    layout = _tabular_layout(signature, list(schema.names), path)
    table = pq.read_table(path, columns=sorted({c for cols in layout.values() for c in cols}))
    inputs = {}
    for spec in signature.inputs:
        width = math.prod(spec.shape)
        columns = []
        for name in layout[spec.name]:
            column = table.column(name)
            if column.null_count:
                first = pc.index(pc.is_null(column), True).as_py()
                raise BatchScoringError(f"{path.name}: column '{name}' is empty at {_row(first)}")
            if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
                lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
                bad = np.flatnonzero(lengths != width)
                if bad.size:
                    raise BatchScoringError(
                        f"{path.name}: column '{name}' has {lengths[bad[0]]} values at "
                        f"{_row(bad[0])}; input '{spec.name}' needs {width}"
                    )
                flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
                columns.append(flat.reshape(len(column), width))
            else:
                columns.append(column.to_numpy(zero_copy_only=False).reshape(-1, 1))
        values = columns[0] if len(columns) == 1 else np.concatenate(columns, axis=1)
        if len(layout[spec.name]) == 1 and values.shape[1] != width:
            raise BatchScoringError(
                f"{path.name}: column '{spec.name}' holds one value per row; input "
                f"'{spec.name}' needs {width}"
            )
        inputs[spec.name] = values.reshape(len(values), *spec.shape)
    return inputs


def _pyarrow_parquet() -> ModuleType:
    try:
        return importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise BatchScoringError(
            "Parquet files need pyarrow: pip install 'tensorgate[parquet]'"
        ) from None


# writing ----------------------------------------------------------------------------------------


def write_outputs(path: Path, file_format: str, outputs: Mapping[str, np.ndarray]) -> None:
    """Write the outputs atomically (a temporary file renamed into place)."""
    if file_format == ".npy":
        (value,) = outputs.values()
        _write_atomically(path, lambda f: np.save(f, value, allow_pickle=value.dtype == object))
    elif file_format == ".npz":
        _write_atomically(path, lambda f: _savez(f, outputs))
    elif file_format == ".csv":
        _write_atomically(path, lambda f: _write_csv(f, outputs))
    else:
        pq = _pyarrow_parquet()
        import pyarrow as pa

        table = pa.table({name: _arrow_column(value) for name, value in _columns(outputs)})
        _write_atomically(path, lambda f: pq.write_table(table, f))


def _columns(outputs: Mapping[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    for name, value in outputs.items():
        flat = value.reshape(len(value), -1)
        if value.ndim == 1:
            yield name, flat[:, 0]
        else:
            for j in range(flat.shape[1]):
                yield f"{name}_{j}", flat[:, j]


def _arrow_column(values: np.ndarray) -> object:
    import pyarrow as pa

    return pa.array(list(values)) if values.dtype == object else pa.array(values)


def _write_csv(file: BinaryIO, outputs: Mapping[str, np.ndarray]) -> None:
    import csv
    import io

    text = io.TextIOWrapper(file, encoding="utf-8", newline="")
    writer = csv.writer(text)
    columns = list(_columns(outputs))
    writer.writerow([name for name, _ in columns])
    cells = [_csv_cells(values) for _, values in columns]
    writer.writerows(zip(*cells, strict=True))
    text.flush()
    text.detach()


def _csv_cells(values: np.ndarray) -> list[object]:
    if values.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]
    if values.dtype.kind == "f":
        # The shortest text that reads back to the value.
        texts: list[object] = values.astype(str).tolist()
        return texts
    cells: list[object] = values.tolist()
    return cells
