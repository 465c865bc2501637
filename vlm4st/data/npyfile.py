"""Loading numpy files (``.npy``/``.npz``) for the readers and ``task=predict``: damage becomes a ``DataError``.

``np.load`` reports a damaged file through many exception types, depending on where the damage is: the zip
container (``zipfile.BadZipFile``, ``zlib.error``, ``NotImplementedError`` for an unknown compression method,
``EOFError``), the ``.npy`` header (``ValueError``, and ``SyntaxError``/``tokenize.TokenError`` from parsing its
dict), the data (``ValueError``, ``OSError``, ``MemoryError`` for a header declaring a huge shape). An ``.npz``
member is only read when accessed, so each access is guarded too; a member that is not an ``.npy`` array comes
back from numpy as raw bytes, which is refused here as well.
"""

from __future__ import annotations

import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib.npyio import NpzFile

from vlm4st.data.errors import DataFileError, DataFormatError, DataValueError

LOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    MemoryError,
    NotImplementedError,
    SyntaxError,
    tokenize.TokenError,
    zipfile.BadZipFile,
    zlib.error,
)
_F32_MAX = float(np.finfo(np.float32).max)


def load(path: Path, source: str) -> np.ndarray | NpzFile:
    """The array of an ``.npy`` file or the lazy archive of an ``.npz`` (without pickled objects; the archive
    closes the file). The file is opened here, not by ``np.load``, which leaves it open when the zip is damaged."""
    try:
        fid = open(path, "rb")  # noqa: SIM115 - an archive keeps it open until it is closed
    except OSError as err:
        raise DataFileError(source, f"cannot open the file ({err})") from err
    try:
        if fid.read(4) in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip archive: .npz
            fid.seek(0)
            return NpzFile(fid, own_fid=True, allow_pickle=False)
        fid.seek(0)
        with fid:
            return np.load(fid, allow_pickle=False)
    except LOAD_ERRORS as err:
        fid.close()
        raise DataFileError(source, f"cannot read as a numpy file ({type(err).__name__}: {err})") from err


def member(z: NpzFile, key: str, source: str) -> np.ndarray:
    """The array stored under ``key`` in an open ``.npz`` archive (the caller checked that the key exists)."""
    try:
        value = z[key]
    except LOAD_ERRORS as err:
        raise DataFileError(source, f"cannot read array '{key}' ({type(err).__name__}: {err})") from err
    if not isinstance(value, np.ndarray):
        raise DataFormatError(source, f"'{key}' is not a numpy array (the archive member is not in .npy format)")
    return value


def real_values(values: np.ndarray, source: str, what: str) -> np.ndarray:
    """``values`` if they are integers or floats that float32 can hold (NaN/Inf are left to ``validate``, which
    counts them); bool, complex, strings, dates and values beyond the float32 range raise."""
    if values.dtype.kind not in "iuf":
        raise DataFormatError(source, f"{what}: expected integer or float values, found dtype {values.dtype}")
    if values.dtype.kind == "f" and values.dtype.itemsize > 4 and values.size:
        finite = values[np.isfinite(values)]
        if finite.size and np.abs(finite).max() > _F32_MAX:
            big = float(finite[np.argmax(np.abs(finite))])
            raise DataValueError(source, f"{what}: value {big:g} is out of the float32 range (|x| <= {_F32_MAX:g})")
    return values
