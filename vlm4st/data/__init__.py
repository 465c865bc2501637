"""Readers, windows, scalers, synthetic cities and loaders for spatiotemporal grid series.

Readers (``_target_`` of ``dataset.sources.<name>``) all return a ``GridData`` frame store:
``UniSTJsonReader`` (UniST JSON), ``WindowNpzReader`` (windowed ``.npz``), ``SeriesReader`` (raw series
``.npz``/``.npy``) and ``SyntheticCityReader`` (generated cities). ``build_datamodule`` turns the ``dataset``
and ``shot_ratio`` configs into a ``DataModule``.

Names are imported on first use (PEP 562), so reading or converting a file needs numpy only: ``torch`` and
Hydra load when the module or scaler is first touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "SPLITS": "records",
    "Batch": "batch",
    "Reader": "reader",
    "FileReader": "reader",
    "GridData": "records",
    "Windows": "records",
    "DataError": "errors",
    "DataFileError": "errors",
    "DataFormatError": "errors",
    "DataValueError": "errors",
    "DataMismatchError": "errors",
    "UniSTJsonReader": "unist_json",
    "WindowNpzReader": "npz",
    "SeriesReader": "npz",
    "SyntheticCityReader": "synthetic",
    "generate_city": "synthetic",
    "MinMaxScaler": "scaler",
    "PreparedDataset": "prepared",
    "DataModule": "module",
    "build_datamodule": "build",
}

__all__ = [
    "SPLITS",
    "Batch",
    "DataError",
    "DataFileError",
    "DataFormatError",
    "DataMismatchError",
    "DataModule",
    "DataValueError",
    "FileReader",
    "GridData",
    "MinMaxScaler",
    "PreparedDataset",
    "Reader",
    "SeriesReader",
    "SyntheticCityReader",
    "UniSTJsonReader",
    "WindowNpzReader",
    "Windows",
    "build_datamodule",
    "generate_city",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vlm4st.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"vlm4st.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from vlm4st.data.batch import Batch
    from vlm4st.data.build import build_datamodule
    from vlm4st.data.errors import DataError, DataFileError, DataFormatError, DataMismatchError, DataValueError
    from vlm4st.data.module import DataModule
    from vlm4st.data.npz import SeriesReader, WindowNpzReader
    from vlm4st.data.prepared import PreparedDataset
    from vlm4st.data.reader import FileReader, Reader
    from vlm4st.data.records import SPLITS, GridData, Windows
    from vlm4st.data.scaler import MinMaxScaler
    from vlm4st.data.synthetic import SyntheticCityReader, generate_city
    from vlm4st.data.unist_json import UniSTJsonReader
