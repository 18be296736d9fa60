"""The distributed pipeline: FrameSeries → DenoisedSeries → ColumnTable + FrameTable.

One task per frame chunk denoises the chunk (:mod:`lowdose.parallel.denoise`),
writes it into ``OUT/denoised.zarr`` (a region write of exactly that chunk),
analyses every frame (:mod:`lowdose.parallel.analyze`), writes the chunk's
Parquet parts and only then its completion marker (:mod:`lowdose.parallel.outputs`).
A re-run skips chunks with markers, so a run killed at any point and re-run gives
the same bytes as an uninterrupted one: every chunk's computation is
deterministic and depends only on its own frames. An optional second pass
analyses time averages of ``n`` frames from the written stores.

Stages: ``denoise`` + ``analyze`` (``lowdose run``), ``denoise`` alone
(``lowdose denoise``) or ``analyze`` of an existing DenoisedSeries
(``lowdose analyze``).

Every store location (``series``, ``out``, ``denoised``) may be a local path or
an fsspec URL such as ``s3://bucket/run`` (:mod:`lowdose.store.location`); the
workers read the frames and write chunks, Parquet parts and markers there
themselves, and the client only reads metadata, times and the ground-truth
table. No science here; never imports torch at module level.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BeforeValidator, Field, field_validator, model_validator

from lowdose.config.base import LowdoseConfig
from lowdose.errors import ConfigError, LowdoseInputError
from lowdose.parallel import outputs
from lowdose.parallel.analyze import AnalyzeKernel, analysis_config, analyze_block, config_for_sums
from lowdose.parallel.cluster import release_free_memory, tune_worker_allocator
from lowdose.parallel.denoise import DEFAULT_BATCH_FRAMES, DEFAULT_TILE_PX
from lowdose.store.location import StorePath, as_location

if TYPE_CHECKING:
    from distributed import Client

Stage = Literal["denoise", "analyze"]

Location = Annotated[Path | str, BeforeValidator(as_location)]
"""A local path (``Path``) or an fsspec URL (``str``, e.g. ``s3://bucket/run``)."""


class ClusterConfig(LowdoseConfig):
    """Where the pipeline runs (see :func:`lowdose.parallel.cluster.connect`)."""

    name: str = Field(
        default="auto", description="auto, local, local-cuda, address, or a registered backend."
    )
    scheduler: str | None = Field(
        default=None, description="Address of a running scheduler (implies address)."
    )
    n_workers: int | None = Field(default=None, ge=1, description="Workers (default: sized for the machine).")
    threads_per_worker: int | None = Field(default=None, ge=1, description="Threads per worker.")
    memory_limit: str | None = Field(default="auto", description="Per-worker memory limit, e.g. '4GB'.")
    processes: bool = Field(default=True, description="Worker processes (False: threads in this process).")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Backend options, checked per backend: slurm/pbs cores, memory, processes, gpus_per_job, "
            "walltime, queue, account, job_script_prologue, jobs or minimum_jobs/maximum_jobs, ...; "
            "kubernetes spec, namespace; local-cuda gpus; local dashboard_address."
        ),
    )

    @field_validator("name")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        # checked when the YAML is read, so the error names the file and the field
        from lowdose.parallel.cluster import BACKENDS, available_backends

        if value not in ("auto", "address") and value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r}; expected one of {available_backends()}")
        return value

    @model_validator(mode="after")
    def _check_options(self) -> ClusterConfig:
        from lowdose.parallel.cluster import validate_backend_options

        name = "address" if self.name == "auto" and self.scheduler else self.name
        try:
            validate_backend_options(name, self.options, "options")
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return self


class PipelineConfig(LowdoseConfig):
    """A ``lowdose run PIPELINE.yaml`` file."""

    series: Location = Field(description="FrameSeries zarr store to process (path or fsspec URL).")
    out: Location = Field(
        description="Output folder or URL prefix (denoised.zarr, columns.parquet, frames.parquet)."
    )
    stages: list[Stage] = Field(default=["denoise", "analyze"], description="Which stages to run.")
    denoised: Location | None = Field(
        default=None, description="Existing DenoisedSeries (analyze-only runs; path or fsspec URL)."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "fsspec options for URL locations, e.g. {endpoint_url: ..., key: ..., secret: ...} "
            "(default: the filesystem's environment variables, e.g. AWS_ENDPOINT_URL)."
        ),
    )
    model: str = Field(default="default", description="Model artefact name or path ('default': shipped).")
    device: str = Field(default="auto", description="Torch device on the workers: auto, cpu, cuda, cuda:N.")
    amp: bool = Field(default=True, description="float16 autocast on CUDA.")
    tile_px: int = Field(default=DEFAULT_TILE_PX, ge=16, description="Frames larger than this are tiled.")
    overlap_px: int | None = Field(
        default=None, ge=0, description="Tile overlap (default: the model's receptive-field radius)."
    )
    batch_frames: int = Field(default=DEFAULT_BATCH_FRAMES, ge=1, description="Frames per forward pass.")
    tta: Literal[1, 2, 4, 8] = Field(
        default=1,
        description="Self-ensemble: average the denoiser over this many flips/transposes of each frame.",
    )
    chunk_frames: int | None = Field(
        default=None, ge=1, description="Frames per task (default: store chunks)."
    )
    out_dtype: Literal["float16", "float32"] = Field(
        default="float32", description="dtype of denoised frames."
    )
    analysis: dict[str, Any] = Field(default_factory=dict, description="AnalysisConfig fields.")
    time_average_frames: int | None = Field(
        default=None, ge=2, description="Also analyse sums of n frames (rates in `analysis` scaled by n)."
    )
    cluster: ClusterConfig = Field(
        default_factory=lambda: ClusterConfig.model_validate({}), description="Dask cluster."
    )
    register_catalog: bool = Field(default=True, description="Register the outputs in the catalog.")
    catalog: Path | None = Field(
        default=None, description="Catalog YAML to register in (default OUT/catalog.yaml)."
    )
    progress: bool = Field(default=True, description="Show a progress bar.")

    @field_validator("analysis")
    @classmethod
    def _analysis(cls, value: dict[str, Any]) -> dict[str, Any]:
        # checked when the file is read (and by `lowdose config validate`), not when a worker starts
        from pydantic import ValidationError

        from lowdose.analysis.frame import AnalysisConfig
        from lowdose.config.base import validation_problems

        try:
            AnalysisConfig.model_validate(value)
        except ValidationError as err:
            raise ValueError(validation_problems(err)) from None
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        # checked here, not on a worker: a torch RuntimeError traceback from the cluster says little
        from lowdose.parallel.denoise import DEVICE_PATTERN

        if not DEVICE_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r}: expected auto, cpu, cuda or cuda:N")
        return value

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        if not self.stages:
            raise ValueError("stages: expected at least one of 'denoise', 'analyze'")
        if "denoise" not in self.stages and self.denoised is None:
            raise ValueError("denoised: an analyze-only run needs the DenoisedSeries to analyse")
        if self.overlap_px is not None and self.tile_px <= 2 * self.overlap_px:
            raise ValueError(f"tile_px ({self.tile_px}) must exceed 2 × overlap_px ({self.overlap_px})")
        remote = [str(v) for v in (self.series, self.out, self.denoised) if isinstance(v, str)]
        if remote and self.register_catalog:
            raise ValueError(
                f"register_catalog: the catalog records local products only, not {remote[0]}; "
                "set register_catalog: false (or pass --no-catalog)"
            )
        return self

    def location(self, name: Literal["series", "out", "denoised"]) -> StorePath:
        """``series``/``out``/``denoised`` with this config's ``storage_options``."""
        value = getattr(self, name)
        if value is None:
            raise LowdoseInputError(f"{name}: not set")
        return StorePath.of(value, self.storage_options)


@dataclass
class PipelineResult:
    """What a run did."""

    out: Path | str
    n_frames: int
    n_chunks: int
    chunks_run: int
    chunks_skipped: int
    elapsed_s: float
    outputs: dict[str, Path | str] = field(default_factory=dict)
    catalog_root: Path | None = None
    """The folder to trust as ``root`` when opening the run's catalog (None: not needed)."""
    catalog_absolute: bool = False
    """Whether opening the run's catalog needs ``allow_absolute`` (it records absolute paths)."""

    @property
    def frames_per_s(self) -> float:
        """Throughput of the chunks actually run in this call."""
        frames = self.n_frames * self.chunks_run / max(self.n_chunks, 1)
        return frames / self.elapsed_s if self.elapsed_s > 0 else float("nan")


def _chunk_task(
    counts: np.ndarray,
    denoised: np.ndarray,
    *,
    chunk: int,
    start: int,
    out: StorePath,
    write_denoised: bool,
    analyze: bool,
    average_frames: int | None,
    pixel_size_A: float,
    time_s: np.ndarray,
    config: Any,
    ground_truth: pd.DataFrame | None,
    kernel: AnalyzeKernel | None,
) -> dict[str, Any]:
    tune_worker_allocator()
    summary: dict[str, Any] = {"chunk": chunk, "start": start, "n_frames": int(counts.shape[0])}
    if write_denoised:
        outputs.write_denoised_chunk(out / outputs.DENOISED_NAME, start, denoised)
        outputs.Progress(out, "denoise").mark_done(chunk, summary)
    if analyze:
        if average_frames:
            n = average_frames
            counts = counts.reshape(-1, n, *counts.shape[1:]).sum(axis=1, dtype=np.uint32)
            denoised = denoised.reshape(-1, n, *denoised.shape[1:]).astype(np.float32).sum(axis=1)
            time_s = time_s.reshape(-1, n)[:, 0]  # as store.align.time_average: the first frame's time
        columns, frames = analyze_block(
            counts,
            denoised,
            frame_offset=start // (average_frames or 1),
            pixel_size_A=pixel_size_A,
            time_s=time_s,
            config=config,
            ground_truth=ground_truth,
            kernel=kernel,
        )
        name = outputs.part_name(chunk)
        outputs.write_parquet_atomic(columns, outputs.parts_dir(out, "columns", average_frames) / name)
        outputs.write_parquet_atomic(frames, outputs.parts_dir(out, "frames", average_frames) / name)
        summary["n_columns"] = len(columns)
        stage = f"avg{average_frames}" if average_frames else "analyze"
        outputs.Progress(out, stage).mark_done(chunk, summary)
    release_free_memory()
    return summary


def read_ground_truth(series: str | Path | StorePath) -> pd.DataFrame | None:
    """The series' ground-truth column table (``frame`` column), or ``None`` when it has none."""
    from lowdose.store.schema import ground_truth_location

    path = ground_truth_location(series)
    if not path.is_file():
        return None
    table = pd.read_parquet(path.native(), **path.pandas_kwargs())
    if "frame" not in table.columns and "image" in table.columns:
        table = table.rename(columns={"image": "frame"})
    return table


def earlier_tta(out: str | Path | StorePath) -> int | None:
    """The ``tta`` a run in ``out`` denoised with, or ``None`` when ``out`` holds no denoise stage.

    Lets a caller refuse a mismatched resume before it starts a cluster (the denoise
    manifest records ``tta`` only when it is not 1).
    """
    manifest = outputs.Progress(out, "denoise").manifest()
    return None if manifest is None else int(manifest.get("tta", 1))


def _run_futures(client: Client, tasks: list[Any], label: str, progress: bool) -> list[dict[str, Any]]:
    from distributed import as_completed
    from tqdm.auto import tqdm

    futures = client.compute(tasks)
    results = []
    # no bar when every chunk was done before (a resumed run): "0chunk [00:00, ?chunk/s]" says nothing
    with tqdm(total=len(futures), desc=label, unit="chunk", disable=not progress or not futures) as bar:
        for future in as_completed(futures):
            results.append(future.result())
            bar.update(1)
    return results


def run_pipeline(
    config: PipelineConfig,
    client: Client | None = None,
    *,
    model: Any = None,
    kernel: AnalyzeKernel | None = None,
    overwrite: bool = False,
) -> PipelineResult:
    """Run (or resume) the pipeline described by ``config``.

    Parameters
    ----------
    config
        What to process and where to write it.
    client
        A Dask client; default: start the cluster of ``config.cluster`` for the run.
    model
        Override ``config.model`` with an in-memory module or
        :class:`~lowdose.parallel.denoise.ModelHandle` (notebooks, tests).
    kernel
        Override the per-frame analysis kernel (default ``analyze_frame``).
    overwrite
        Delete the outputs of an earlier run in ``config.out`` first instead of resuming
        (only the pipeline's own files: :func:`lowdose.parallel.outputs.run_outputs`).

    A run that fails before any chunk is finished removes ``config.out`` again
    if it created that folder itself (a folder that was there before is kept).
    """
    out = config.location("out")
    created = not out.exists()
    run: _Run | None = None
    try:
        # Inputs are checked (and the model hashed) before any cluster is started.
        run = _Run(config, model, kernel, overwrite)
        if client is None:
            from lowdose.parallel.cluster import connect, resolve_backend_name

            c = config.cluster
            resolve_backend_name(c.name, c.scheduler)
            with connect(
                c.name,
                scheduler=c.scheduler,
                n_workers=c.n_workers,
                threads_per_worker=c.threads_per_worker,
                memory_limit=c.memory_limit,
                processes=c.processes,
                quiet=not config.progress,
                options=c.options,
            ) as started:
                return run.execute(started)
        return run.execute(client)
    except Exception:
        # Our own cluster is shut down by now; a caller's may still run submitted tasks.
        settled = client is None or run is None or not run.submitted
        if created and settled:
            _remove_if_no_results(out)
        raise


def _remove_if_no_results(out: StorePath) -> None:
    """Remove ``out`` (created by a run that failed) unless some chunk of it was finished."""
    try:
        if out.exists() and not (out / outputs.PROGRESS_NAME).glob("*/chunk-*.done"):
            out.rmtree()
    except OSError:
        pass  # the run's own error is what the user needs to see


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (resolved local paths or URLs)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _check_out(out: StorePath, inputs: dict[str, StorePath], overwrite: bool) -> None:
    """Refuse an OUT that is a file, lies in an input store, or whose --overwrite would delete an input."""
    if out.is_file():
        raise LowdoseInputError(f"out: {out} exists and is not a folder; choose a folder for the outputs")
    target = out.resolved()
    # what --overwrite deletes (the _avgN tables are Parquet files: no input store lies in them)
    doomed = [(out / name).resolved() for name in outputs.RUN_NAMES] if overwrite else []
    for name, source in inputs.items():
        where = source.resolved()
        if _inside(target, where):
            raise LowdoseInputError(
                f"out: {out} is the {name} store {source} or inside it; "
                "the outputs go in a folder of their own"
            )
        hit = next((d for d in doomed if _inside(where, d)), None)
        if hit is not None:
            raise LowdoseInputError(
                f"--overwrite would delete {hit}, which holds the {name} input {source}; "
                "choose another --out (or move the input) instead"
            )


SERIES_IDENTITY_ATTRS = (
    "sources",
    "synthetic_seed",
    "synthetic_particle",
    "synthetic_n_frames",
    "synthetic_defocus_nm",
)
"""FrameSeries attrs that tell series apart; a DenoisedSeries carries its series' copies."""


def _refuse_other_series(denoised: Any, den_attrs: Any, series: Any, series_attrs: Any) -> None:
    """Refuse denoised frames whose record of their series differs from ``series``'s own attrs.

    A DenoisedSeries keeps its FrameSeries' attrs; the ingested sources (with their
    sha256) or the synthetic series' seed and spec identify the series, so frames
    denoised from another series of the same shape are not analysed against it.
    """
    for key in SERIES_IDENTITY_ATTRS:
        if (
            key in den_attrs
            and key in series_attrs
            and _identity(key, den_attrs[key]) != _identity(key, series_attrs[key])
        ):
            made_from = den_attrs.get("source_series", "another series")
            raise LowdoseInputError(
                f"{denoised}: denoised from {made_from}, not from {series} (the series' {key} differs); "
                "name the DenoisedSeries of this series, or denoise it (lowdose denoise)"
            )


def _identity(key: str, value: Any) -> Any:
    """What of an identity attr names the data: of ``sources``, each file's sha256, dataset and frames."""
    if key == "sources" and isinstance(value, list):
        from lowdose.store.ingest import SOURCE_IDENTITY_KEYS

        return [
            tuple(record.get(k) for k in SOURCE_IDENTITY_KEYS) if isinstance(record, dict) else record
            for record in value
        ]
    return value


class _Run:
    """State of one pipeline invocation (keeps :func:`run_pipeline` readable)."""

    def __init__(
        self,
        config: PipelineConfig,
        model: Any,
        kernel: AnalyzeKernel | None,
        overwrite: bool,
    ) -> None:
        from lowdose.store.series import open_series

        self.config, self.kernel = config, kernel
        self.submitted = False
        """Whether chunk tasks were handed to the cluster (they may write into OUT)."""
        self.out = config.location("out")
        self.source = config.location("series")
        inputs = {"series": self.source}
        if config.denoised is not None and "denoise" not in config.stages:
            inputs["denoised"] = config.location("denoised")
        _check_out(self.out, inputs, overwrite)
        if config.register_catalog:  # a catalog that cannot take the entries fails now, not after the run
            from lowdose.store.catalog import check_catalog_target

            check_catalog_target(config.catalog or Path(self.out.location) / "catalog.yaml")
        if overwrite:
            outputs.remove_run_outputs(self.out)
        self.out.mkdir()
        self.series = open_series(self.source.location, **self.source.zarr_kwargs())
        counts = self.series["counts"].data
        self.n_frames, ny, nx = (int(s) for s in counts.shape)
        if self.n_frames == 0:
            raise LowdoseInputError(f"{config.series}: the series has no frames")
        chunk_frames = config.chunk_frames or int(counts.chunks[0][0])
        if config.time_average_frames and chunk_frames % config.time_average_frames:
            chunk_frames = max(1, chunk_frames // config.time_average_frames) * config.time_average_frames
        self.chunk_frames = chunk_frames
        self.counts = counts.rechunk((chunk_frames, ny, nx))
        self.frame_shape = (ny, nx)
        self.starts = list(range(0, self.n_frames, chunk_frames))
        self.pixel_size_A = float(self.series.attrs["pixel_size_A"])
        self.time_s = np.asarray(self.series["time_s"].values, dtype="float64")
        self.ground_truth = read_ground_truth(self.source)
        self.analysis = analysis_config(config.analysis) if "analyze" in config.stages else None
        self.handle = None
        if "denoise" in config.stages:
            from lowdose.parallel.denoise import model_handle

            self.handle = model_handle(model if model is not None else config.model)

    def _truth(self, start: int, stop: int) -> pd.DataFrame | None:
        gt = self.ground_truth
        if gt is None:
            return None
        return gt[(gt["frame"] >= start) & (gt["frame"] < stop)]

    def _denoise_manifest(self) -> dict[str, Any]:
        assert self.handle is not None
        c = self.config
        return {
            "series": self.source.resolved(),
            "n_frames": self.n_frames,
            "frame_shape": list(self.frame_shape),
            "chunk_frames": self.chunk_frames,
            "model_id": self.handle.model_id,
            "model_sha256": self.handle.sha256,
            "tile_px": c.tile_px,
            "overlap_px": c.overlap_px,
            "batch_frames": c.batch_frames,
            "out_dtype": c.out_dtype,
            # only when used: a run without it keeps the manifest of runs made before the option
            **({"tta": c.tta} if c.tta != 1 else {}),
        }

    def _denoised_path(self) -> StorePath:
        if "denoise" in self.config.stages:
            return self.out / outputs.DENOISED_NAME
        return self.config.location("denoised")

    def _denoised_identity(self) -> str:
        """What made the denoised frames the analysis reads: the model's sha256, and ``+ttaN`` when N ≠ 1.

        The analysis manifests record it, so an interrupted analysis is not resumed on frames
        denoised another way (a run without tta keeps the manifest of runs made before the option).
        """
        tta: int
        if self.handle is not None:
            sha, tta = self.handle.sha256, self.config.tta
        else:
            attrs = outputs.open_denoised(self._denoised_path()).attrs
            sha, tta = str(attrs["model_sha256"]), int(attrs.get("tta", 1))
        return sha if tta == 1 else f"{sha}+tta{tta}"

    def _denoised_source(self) -> Any:
        """The denoised frames as a dask array aligned with ``self.counts``."""
        c = self.config
        if "denoise" not in c.stages:
            stored = outputs.open_denoised(self._denoised_path())
            den = stored["denoised"].data
            if den.shape != self.counts.shape:
                raise LowdoseInputError(
                    f"{c.denoised}: denoised shape {den.shape} does not match the series {self.counts.shape}"
                )
            _refuse_other_series(c.denoised, stored.attrs, c.series, self.series.attrs)
            return den.rechunk(self.counts.chunks)
        from lowdose.parallel.denoise import denoise_array

        return denoise_array(
            self.counts,
            self.handle,  # type: ignore[arg-type]
            tile_px=c.tile_px,
            overlap_px=c.overlap_px,
            batch_frames=c.batch_frames,
            device=c.device,
            amp=c.amp,
            out_dtype=c.out_dtype,
            tta=c.tta,
        )

    def _prepare_denoise(self) -> set[int]:
        progress = outputs.Progress(self.out, "denoise")
        manifest = self._denoise_manifest()
        if not progress.check_or_start(manifest, self.out):
            assert self.handle is not None
            attrs = {k: v for k, v in self.series.attrs.items() if not k.startswith("lowdose_")}
            for key in ("n_frames", "ingest_state", "compression", "chunk_frames"):
                attrs.pop(key, None)
            attrs.update(model_id=self.handle.model_id, model_sha256=self.handle.sha256, tta=self.config.tta)
            attrs["source_series"] = self.source.resolved()
            outputs.create_denoised_store(
                self.out / outputs.DENOISED_NAME,
                n_frames=self.n_frames,
                frame_shape=self.frame_shape,
                chunk_frames=self.chunk_frames,
                dtype=self.config.out_dtype,
                time_s=self.time_s,
                attrs=attrs,
            )
            progress.commit_manifest(manifest)
        return progress.done_chunks()

    def _prepare_analysis(self, stage: str, denoised_from: str) -> set[int]:
        progress = outputs.Progress(self.out, stage)
        manifest = {
            "series": self.source.resolved(),
            "n_frames": self.n_frames,
            "chunk_frames": self.chunk_frames,
            "denoised": denoised_from,
            "analysis": self.config.analysis,
            "time_average_frames": self.config.time_average_frames if stage != "analyze" else None,
        }
        if not progress.check_or_start(manifest, self.out):
            average = self.config.time_average_frames if stage != "analyze" else None
            for table in ("columns", "frames"):
                (self.out / outputs.table_name(table, average)).unlink(missing_ok=True)
                for part in outputs.parts_dir(self.out, table, average).glob("part-*.parquet"):
                    part.unlink(missing_ok=True)
            progress.commit_manifest(manifest)
        return progress.done_chunks()

    def execute(self, client: Client) -> PipelineResult:
        """Run the chunks not done yet on ``client``; assemble tables; register outputs."""
        import dask

        self.client = client
        c = self.config
        t0 = time.perf_counter()
        denoise, analyze = "denoise" in c.stages, "analyze" in c.stages
        denoise_done = self._prepare_denoise() if denoise else set(range(len(self.starts)))
        denoised_by = self._denoised_identity()
        analyze_done = (
            self._prepare_analysis("analyze", denoised_by) if analyze else set(range(len(self.starts)))
        )
        denoised = self._denoised_source()
        written_blocks = None
        if denoise and denoise_done:
            # Chunks denoised by an earlier run are read back, not recomputed.
            written = outputs.open_denoised(self.out / outputs.DENOISED_NAME)["denoised"].data
            written_blocks = written.rechunk(self.counts.chunks).to_delayed().ravel()
        count_blocks = self.counts.to_delayed().ravel()
        den_blocks = denoised.to_delayed().ravel()
        tasks = []
        for chunk, start in enumerate(self.starts):
            need_denoise = chunk not in denoise_done
            need_analyze = chunk not in analyze_done
            if not (need_denoise or need_analyze):
                continue
            den_block = den_blocks[chunk]
            if not need_denoise and written_blocks is not None:
                den_block = written_blocks[chunk]
            stop = min(start + self.chunk_frames, self.n_frames)
            tasks.append(
                dask.delayed(_chunk_task, pure=False)(
                    count_blocks[chunk],
                    den_block,
                    chunk=chunk,
                    start=start,
                    out=self.out,
                    write_denoised=need_denoise,
                    analyze=need_analyze,
                    average_frames=None,
                    pixel_size_A=self.pixel_size_A,
                    time_s=self.time_s[start:stop],
                    config=self.analysis,
                    ground_truth=self._truth(start, stop),
                    kernel=self.kernel,
                )
            )
        self.submitted = self.submitted or bool(tasks)
        _run_futures(self.client, tasks, "frame chunks", c.progress)
        chunks_run = len(tasks)
        if analyze:
            self._consolidate(None, list(range(len(self.starts))), rewrite=bool(tasks))
        if analyze and c.time_average_frames:
            self._time_average(denoised_by)
        elapsed = time.perf_counter() - t0
        produced: dict[str, Path | str] = {}
        if denoise:
            produced["denoised"] = (self.out / outputs.DENOISED_NAME).native()
        if analyze:
            produced["columns"] = (self.out / outputs.table_name("columns")).native()
            produced["frames"] = (self.out / outputs.table_name("frames")).native()
        result = PipelineResult(
            out=self.out.native(),
            n_frames=self.n_frames,
            n_chunks=len(self.starts),
            chunks_run=chunks_run,
            chunks_skipped=len(self.starts) - chunks_run,
            elapsed_s=elapsed,
            outputs=produced,
        )
        if c.register_catalog:
            _register(c, result)
        return result

    def _time_average(self, denoised_by: str) -> None:
        import dask

        n = self.config.time_average_frames
        assert n is not None
        stage = f"avg{n}"
        done = self._prepare_analysis(stage, denoised_by)
        config = config_for_sums(self.analysis, n)
        den = outputs.open_denoised(self._denoised_path())["denoised"].data.rechunk(self.counts.chunks)
        count_blocks, den_blocks = self.counts.to_delayed().ravel(), den.to_delayed().ravel()
        tasks = []
        for chunk, start in enumerate(self.starts):
            stop = min(start + self.chunk_frames, self.n_frames)
            usable = (stop - start) // n * n
            if chunk in done or usable == 0:
                continue
            tasks.append(
                dask.delayed(_chunk_task, pure=False)(
                    count_blocks[chunk][:usable],
                    den_blocks[chunk][:usable],
                    chunk=chunk,
                    start=start,
                    out=self.out,
                    write_denoised=False,
                    analyze=True,
                    average_frames=n,
                    pixel_size_A=self.pixel_size_A,
                    time_s=self.time_s[start : start + usable],
                    config=config,
                    ground_truth=None,
                    kernel=self.kernel,
                )
            )
        self.submitted = self.submitted or bool(tasks)
        _run_futures(self.client, tasks, f"{n}-frame averages", self.config.progress)
        usable_chunks = [
            chunk
            for chunk, start in enumerate(self.starts)
            if (min(start + self.chunk_frames, self.n_frames) - start) >= n
        ]
        self._consolidate(n, usable_chunks, rewrite=bool(tasks))

    def _consolidate(self, average_frames: int | None, chunks: list[int], *, rewrite: bool) -> None:
        """Assemble the single-file tables once every chunk of the stage is done."""
        for table in ("columns", "frames"):
            target = self.out / outputs.table_name(table, average_frames)
            if rewrite or not target.is_file():
                outputs.consolidate(outputs.parts_dir(self.out, table, average_frames), target, chunks)


def _entry_name(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", text).strip("._-") or "run"
    return cleaned[:100]


def _register(config: PipelineConfig, result: PipelineResult) -> None:
    """Register the series and the run's outputs in the catalog (default ``OUT/catalog.yaml``).

    Entries: ``<series>`` (the FrameSeries) and ``<out>.denoised``, ``<out>.columns``,
    ``<out>.frames`` linked to it. Products outside the catalog's folder (the series,
    usually) are recorded relative to it through ``..`` when the catalog's folder and
    every product share a folder at least two levels below the filesystem root (not
    ``/tmp`` or ``/home`` itself): the catalog moves with that folder, and opening it
    trusts that folder as ``root``. Otherwise they are recorded by absolute path
    (opened with ``allow_absolute``). ``result.catalog_root`` and
    ``result.catalog_absolute`` say what opening the whole catalog needs (an earlier
    run's entries included).
    """
    from lowdose.store.catalog import product_entry, register_products, register_run_outputs, trust_needed

    out = Path(result.out)  # local: remote outputs are refused by PipelineConfig._check
    catalog = Path(config.catalog) if config.catalog else out / "catalog.yaml"
    folder = catalog.resolve().parent
    common = Path(os.path.commonpath([folder, Path(config.series).resolve(), out.resolve()]))
    root = common if common != folder and len(common.parts) >= 3 else None
    series_name = _entry_name(Path(config.series).name.removesuffix(".zarr"))
    register_products(
        catalog,
        [product_entry(series_name, config.series, source="lowdose run")],
        allow_absolute=root is None,
        root=root,
    )
    register_run_outputs(
        catalog,
        out,
        prefix=_entry_name(out.name),
        series=series_name,
        source=f"lowdose run (model {config.model})",
        allow_absolute=root is None,
        root=root,
    )
    result.outputs["catalog"] = catalog
    result.catalog_root, result.catalog_absolute = trust_needed(catalog)
