"""Reads an `optimized/<market>/<dataset>/` tree (or a `parquet/` one) as one Hive-partitioned
dataset with DuckDB, Polars and PyArrow, and checks that all three see the same rows, columns,
UTC timestamps and float values (bit for bit, rows ordered by symbol and time), whatever codec
each column chunk was written with (zstd, or LZ4_RAW for some PLAIN floats of `optimize`).

Usage: read_optimized.py DATASET_DIR TIME_COLUMN EXPECTED_ROWS [PARTITION_COLUMNS]
PARTITION_COLUMNS is comma-separated, `symbol,year,month` by default (`symbol,date` for `parquet/`).
Prints one JSON line with what each reader saw and, under "codecs", each column's codecs over
all files (from the Parquet footers); exits non-zero on any disagreement.
"""
import json
import sys

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def main() -> None:
    root, time_col, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    parts = (sys.argv[4] if len(sys.argv) > 4 else "symbol,year,month").split(",")
    seen = {}

    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    codecs = {}
    for f in dataset.files:
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                col = meta.row_group(g).column(c)
                codecs.setdefault(col.path_in_schema, set()).add(col.compression)
    t = dataset.to_table()
    seen["pyarrow"] = {
        "rows": t.num_rows,
        "columns": sorted(t.column_names),
        "tz": str(t.schema.field(time_col).type.tz),
        "symbols": sorted(set(t.column("symbol").to_pylist())),
    }

    df = pl.scan_parquet(f"{root}/**/*.parquet", hive_partitioning=True).collect()
    seen["polars"] = {
        "rows": df.height,
        "columns": sorted(df.columns),
        "tz": str(df.schema[time_col].time_zone),
        "symbols": sorted(df["symbol"].unique().to_list()),
    }

    con = duckdb.connect()
    src = f"read_parquet('{root}/**/*.parquet', hive_partitioning = true)"
    types = {r[0]: r[1] for r in con.execute(f"describe select * from {src}").fetchall()}
    rows = con.execute(f"select count(*) from {src}").fetchone()[0]
    syms = [r[0] for r in con.execute(f"select distinct symbol from {src} order by 1").fetchall()]
    seen["duckdb"] = {
        "rows": rows,
        "columns": sorted(types),
        "tz": "UTC" if types[time_col] == "TIMESTAMP WITH TIME ZONE" else types[time_col],
        "symbols": syms,
    }

    # Every float column, bit for bit, in one row order (symbol, then time; ties keep no order,
    # so each reader's rows are sorted by the values too).
    floats = sorted(f.name for f in t.schema if pa.types.is_floating(f.type))
    key = ["symbol", time_col] + floats
    by = {
        "pyarrow": t.sort_by([(k, "ascending") for k in key]),
        "polars": df.sort(key).to_arrow(),
        "duckdb": con.sql(f"select * from {src} order by {', '.join(key)}").to_arrow_table(),
    }
    reference = {col: by_values(by["pyarrow"], col) for col in floats}
    for name, tab in by.items():
        for col in floats:
            a, b = by_values(tab, col), reference[col]
            if a.shape != b.shape or not np.array_equal(a.view(np.uint64), b.view(np.uint64)):
                sys.exit(f"{name} disagrees on the values of {col}")
    seen["codecs"] = {k: sorted(v) for k, v in sorted(codecs.items())}
    seen["floats_compared"] = floats
    print(json.dumps(seen))
    first = seen["pyarrow"]
    for name in ("pyarrow", "polars", "duckdb"):
        s = seen[name]
        if s["rows"] != expected:
            sys.exit(f"{name} read {s['rows']} rows, expected {expected}")
        if s["tz"] != "UTC":
            sys.exit(f"{name}: {time_col} is not UTC: {s['tz']}")
        for k in ("columns", "symbols"):
            if s[k] != first[k]:
                sys.exit(f"{name} disagrees on {k}: {s[k]} vs {first[k]}")
        for part in parts:
            if part not in s["columns"]:
                sys.exit(f"{name} did not see the hive partition column {part}")


def by_values(tab, col):
    """Column `col` of a table as float64 (nulls as NaN), for a bitwise comparison."""
    return np.ascontiguousarray(
        tab.column(col).to_numpy(zero_copy_only=False), dtype=np.float64
    )


if __name__ == "__main__":
    main()
