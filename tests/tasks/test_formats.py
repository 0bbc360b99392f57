from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from regulator.errors import ConfigError, DataFormatError
from regulator.tasks.formats import (
    load_csv,
    load_file,
    load_gas_drift,
    load_npz,
    save_csv,
    save_npz,
)

COUNTS = {1: 445, 2: 1244, 3: 1586, 4: 161, 5: 197}


def test_reads_all_five_shipped_batches(gas_drift_dir: Path) -> None:
    classes: set[int] = set()
    for b, n in COUNTS.items():
        x, y, conc = load_gas_drift(gas_drift_dir / f"batch{b}.dat")
        assert x.shape == (n, 128, 1) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64 and y.min() >= 0
        assert conc.shape == (n,) and np.all(conc > 0)
        assert np.all(np.isfinite(x))
        classes |= set(y.tolist())
    assert classes == set(range(6))


def test_gas_drift_first_line_matches_the_file(gas_drift_dir: Path) -> None:
    x, y, conc = load_gas_drift(gas_drift_dir / "batch1.dat")
    assert y[0] == 0 and conc[0] == pytest.approx(10.0)
    assert x[0, 0, 0] == pytest.approx(15596.1621) and x[0, 1, 0] == pytest.approx(1.868245)


GOOD = "1;10.0 1:1.5 2:-2.0 3:3.0\n2;5.0 1:0.5 3:1.0\n"


def test_sparse_lines_fill_missing_features_with_zero(tmp_path: Path) -> None:
    p = tmp_path / "b.dat"
    p.write_text(GOOD)
    x, y, conc = load_gas_drift(p)
    assert x[:, :, 0].tolist() == [[1.5, -2.0, 3.0], [0.5, 0.0, 1.0]]
    assert y.tolist() == [0, 1] and conc.tolist() == [10.0, 5.0]


@pytest.mark.parametrize(
    "bad",
    ["x;1.0 1:2.0", "1 1:2.0", "1;1.0 1:abc", "1;1.0 1-2.0", "1;1.0 0:2.0", "1;1.0", "0;1 1:1"],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad: str) -> None:
    p = tmp_path / "broken.dat"
    p.write_text(GOOD + bad + "\n")
    with pytest.raises(DataFormatError, match=r"broken\.dat:3: malformed line"):
        load_gas_drift(p)


def test_csv_round_trip_and_errors(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    y = np.array([1, 0, 1])
    p = tmp_path / "rec.csv"
    save_csv(p, x, y)
    x2, y2 = load_csv(p, length=2)
    np.testing.assert_array_equal(x2, x)
    assert y2.dtype == np.int64 and y2.tolist() == [1, 0, 1]
    assert load_csv(p)[0].shape == (3, 4, 1)
    p.write_text("label,a,b\n1,2.0,3.0\n0,oops,1\n")
    with pytest.raises(DataFormatError, match=r"rec\.csv:3"):
        load_csv(p)
    p.write_text("label,a,b\n1,2.0\n")
    with pytest.raises(DataFormatError, match=r"rec\.csv:2"):
        load_csv(p)
    p.write_text("y,a\n0.5,1\n")
    with pytest.raises(DataFormatError, match="no column 'label'"):
        load_csv(p)
    assert load_csv(p, label_column="y")[1].dtype == np.float32


def test_npz_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "rec.npz"
    save_npz(p, np.ones((4, 3, 5)), np.array([0, 1, 2, 0]))
    x, y = load_npz(p)
    assert x.shape == (4, 3, 5) and x.dtype == np.float32 and y.dtype == np.int64
    np.savez(p, x=np.ones((4, 3)), y=np.ones(4, dtype=np.float64))
    x, y = load_npz(p)
    assert x.shape == (4, 3, 1) and y.dtype == np.float32
    np.savez(p, a=np.ones(3))
    with pytest.raises(DataFormatError, match="expected arrays"):
        load_npz(p)


def test_load_file_dispatches_by_extension(tmp_path: Path) -> None:
    p = tmp_path / "b.dat"
    p.write_text(GOOD)
    assert load_file(p).extra is not None
    with pytest.raises(ConfigError, match="valid: csv, gas-drift, npz"):
        load_file(tmp_path / "b.parquet")


def test_gzip_compressed_batches_read_the_same(tmp_path: Path) -> None:
    plain = tmp_path / "b.dat"
    plain.write_text(GOOD)
    packed = tmp_path / "b.dat.gz"
    packed.write_bytes(gzip.compress(GOOD.encode("ascii")))
    a, b = load_file(plain), load_file(packed)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    (tmp_path / "bad.dat.gz").write_bytes(b"not gzip")
    with pytest.raises(DataFormatError, match="cannot read"):
        load_file(tmp_path / "bad.dat.gz")
