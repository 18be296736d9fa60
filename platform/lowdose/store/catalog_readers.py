"""The one Intake reader lowdose adds: a model artefact (``model.yaml`` + ``*.safetensors``).

Zarr stores and Parquet tables use Intake's own readers; a model artefact has no
Intake reader, so this module defines :class:`ModelArtefactReader`, which reads
the ``model.yaml`` with a safe YAML loader and lists the weight files beside it.
It never loads weights (that is :mod:`lowdose.models`' job) and never imports
torch, dask or xarray.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any, ClassVar

import fsspec
import yaml
from intake.readers import datatypes
from intake.readers.readers import BaseReader


@dataclass(frozen=True)
class ModelArtefact:
    """A model artefact found through a catalog: where it is and what its ``model.yaml`` says."""

    directory: str
    """Folder (local path or URL) holding the weights and ``model.yaml``."""
    config: dict[str, Any]
    """Contents of ``model.yaml`` (architecture, training config, data hash, metrics)."""
    weights: list[str] = field(default_factory=list)
    """Locations of the ``*.safetensors`` files in the folder."""


class ModelArtefactReader(BaseReader):
    """Read a lowdose model artefact described by its ``model.yaml``."""

    implements: ClassVar[set[Any]] = {datatypes.YAMLFile}
    imports: ClassVar[set[str]] = {"yaml", "fsspec"}
    output_instance = "lowdose.store.catalog_readers:ModelArtefact"

    def _read(self, data: datatypes.YAMLFile, **kwargs: Any) -> ModelArtefact:
        fs, path = fsspec.core.url_to_fs(data.url, **(data.storage_options or {}))
        with fs.open(path, "rt") as stream:
            config = yaml.safe_load(stream) or {}
        directory = posixpath.dirname(path)
        weights = sorted(p for p in fs.ls(directory, detail=False) if str(p).endswith(".safetensors"))
        return ModelArtefact(
            directory=fs.unstrip_protocol(directory) if "://" in data.url else directory,
            config=dict(config) if isinstance(config, dict) else {"value": config},
            weights=[fs.unstrip_protocol(p) if "://" in data.url else str(p) for p in weights],
        )
