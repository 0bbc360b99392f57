"""Labelled data files: CSV, NPZ and the sparse gas-drift format.

Every loader returns samples as float32 ``[n, C, L]`` (static feature vectors become
``[n, F, 1]``) and labels as int64 (integral labels) or float32 (anything else). A
malformed file raises :class:`~regulator.errors.DataFormatError` naming the file and,
for text formats, the 1-based line number.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regulator.errors import ConfigError, DataFormatError

__all__ = [
    "LabelledData",
    "load_csv",
    "load_file",
    "load_gas_drift",
    "load_npz",
    "save_csv",
    "save_npz",
]


@dataclass(frozen=True)
class LabelledData:
    """Samples ``x [n, C, L]`` float32, labels ``y [n]``, optional per-sample ``extra``."""

    x: np.ndarray
    y: np.ndarray
    extra: np.ndarray | None = None


def _labels(values: np.ndarray) -> np.ndarray:
    """int64 when every label is integral, else float32."""
    if values.size and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    return values.astype(np.float32)


def load_gas_drift(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one gas-drift batch: lines ``GAS;CONCENTRATION 1:F1 … 128:F128``.

    Returns ``x [n, 128, 1]`` float32 raw features, ``y [n]`` int64 gas ids made 0-based
    (file label 1 becomes 0), and ``extra [n]`` float32 concentrations (ppmv).

    Features are 1-based ``idx:value`` pairs; missing indices read as 0 (sparse format),
    and every line must have the same number of features as the highest index seen.
    A name ending in ``.gz`` is read through gzip (``batch2.dat.gz``).
    """
    path = Path(path)
    rows: list[dict[int, float]] = []
    labels: list[int] = []
    conc: list[float] = []
    n_features = 0
    try:
        if path.suffix.lower() == ".gz":
            text = gzip.decompress(path.read_bytes()).decode("ascii")
        else:
            text = path.read_text(encoding="ascii")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot read: {exc}") from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        head, _, rest = line.strip().partition(" ")
        label_s, sep, extra_s = head.partition(";")
        try:
            if not sep:
                raise ValueError("expected 'LABEL;EXTRA' before the first space")
            label = int(label_s)
            if label < 1:
                raise ValueError(f"label {label} < 1")
            extra = float(extra_s)
            feats: dict[int, float] = {}
            for item in rest.split():
                idx_s, colon, val_s = item.partition(":")
                if not colon:
                    raise ValueError(f"expected 'index:value', got {item!r}")
                idx = int(idx_s)
                if idx < 1 or idx in feats:
                    raise ValueError(f"bad or repeated feature index {idx}")
                value = float(val_s)
                if not np.isfinite(value):
                    raise ValueError(f"non-finite value at feature {idx}")
                feats[idx] = value
            if not feats:
                raise ValueError("no features")
        except ValueError as exc:
            raise DataFormatError(f"{path}:{lineno}: malformed line: {exc}") from None
        n_features = max(n_features, max(feats))
        rows.append(feats)
        labels.append(label - 1)
        conc.append(extra)
    if not rows:
        raise DataFormatError(f"{path}: no samples")
    x = np.zeros((len(rows), n_features, 1), dtype=np.float32)
    for i, feats in enumerate(rows):
        x[i, np.fromiter(feats.keys(), dtype=np.int64) - 1, 0] = list(feats.values())
    return x, np.asarray(labels, dtype=np.int64), np.asarray(conc, dtype=np.float32)


def load_csv(
    path: str | Path, label_column: str | int = "label", length: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV with a header row: one label column, the rest numeric features.

    ``label_column`` is the header name or a 0-based column index. With ``length`` L > 1
    the F features of a row are read channel-major as ``[F // L, L]``.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DataFormatError(f"{path}:1: empty file, expected a header row")
            if isinstance(label_column, int):
                col = label_column
            elif label_column in header:
                col = header.index(label_column)
            else:
                raise DataFormatError(f"{path}:1: no column {label_column!r} in header")
            if not 0 <= col < len(header):
                raise DataFormatError(f"{path}:1: label column {col} out of range")
            xs: list[list[float]] = []
            ys: list[float] = []
            for row in reader:
                lineno = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataFormatError(
                        f"{path}:{lineno}: {len(row)} fields, header has {len(header)}"
                    )
                try:
                    values = [float(c) for c in row]
                except ValueError as exc:
                    raise DataFormatError(f"{path}:{lineno}: non-numeric field: {exc}") from None
                if not np.all(np.isfinite(values)):
                    raise DataFormatError(f"{path}:{lineno}: non-finite value")
                ys.append(values.pop(col))
                xs.append(values)
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read: {exc}") from exc
    if not xs:
        raise DataFormatError(f"{path}: no samples")
    x = np.asarray(xs, dtype=np.float32)
    if x.shape[1] % length:
        raise DataFormatError(f"{path}: {x.shape[1]} features do not split into length {length}")
    return x.reshape(len(xs), -1, length), _labels(np.asarray(ys))


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an NPZ holding arrays ``x`` ([n, C, L] or [n, F]) and ``y`` ([n] or [n, D])."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data or "y" not in data:
                raise DataFormatError(f"{path}: expected arrays 'x' and 'y', got {data.files}")
            x = np.asarray(data["x"], dtype=np.float32)
            y_raw = np.asarray(data["y"])
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: cannot read NPZ: {exc}") from exc
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or y_raw.shape[:1] != x.shape[:1]:
        raise DataFormatError(f"{path}: x {x.shape} and y {y_raw.shape} do not match")
    if not np.all(np.isfinite(x)):
        raise DataFormatError(f"{path}: non-finite values in x")
    if np.issubdtype(y_raw.dtype, np.integer):
        y = y_raw.astype(np.int64)
    else:
        y = y_raw.astype(np.float32)
    return x, y


def load_file(path: str | Path, format: str | None = None) -> LabelledData:
    """Load by ``format`` ("csv", "npz", "gas-drift") or, if None, by file extension
    (``.csv``, ``.npz``, ``.dat``/``.svm`` for the sparse gas-drift format, also as
    ``.dat.gz``/``.svm.gz``)."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    suffix = suffixes[0] if suffixes[-1:] == [".gz"] and len(suffixes) == 2 else path.suffix
    fmt = format or {".csv": "csv", ".npz": "npz", ".dat": "gas-drift", ".svm": "gas-drift"}.get(
        suffix.lower()
    )
    if fmt == "csv":
        return LabelledData(*load_csv(path))
    if fmt == "npz":
        return LabelledData(*load_npz(path))
    if fmt == "gas-drift":
        return LabelledData(*load_gas_drift(path))
    raise ConfigError(
        f"unknown data format {fmt or path.suffix!r} for {path}; valid: csv, gas-drift, npz"
    )


def save_npz(path: str | Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write ``x`` and ``y`` as an uncompressed NPZ (readable by :func:`load_npz`)."""
    np.savez(Path(path), x=np.asarray(x, dtype=np.float32), y=np.asarray(y))


def save_csv(path: str | Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write a header row ``label,f0,f1,…`` then one row per sample (features flattened)."""
    flat = np.asarray(x).reshape(len(x), -1)
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["label", *(f"f{i}" for i in range(flat.shape[1]))])
        for label, row in zip(np.asarray(y).tolist(), flat.tolist(), strict=True):
            w.writerow([label, *(repr(float(v)) for v in row)])
