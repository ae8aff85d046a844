"""Reads an `optimized/<market>/<dataset>/` tree (or a `parquet/` one) as one Hive-partitioned
dataset with DuckDB, Polars and PyArrow, and checks that all three see the same rows, columns
and UTC timestamps.

Usage: read_optimized.py DATASET_DIR TIME_COLUMN EXPECTED_ROWS [PARTITION_COLUMNS]
PARTITION_COLUMNS is comma-separated, `symbol,year,month` by default (`symbol,date` for `parquet/`).
Prints one JSON line with what each reader saw; exits non-zero on any disagreement.
"""
import json
import sys

import duckdb
import polars as pl
import pyarrow.dataset as ds


def main() -> None:
    root, time_col, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    parts = (sys.argv[4] if len(sys.argv) > 4 else "symbol,year,month").split(",")
    seen = {}

    t = ds.dataset(root, format="parquet", partitioning="hive").to_table()
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

    print(json.dumps(seen))
    first = seen["pyarrow"]
    for name, s in seen.items():
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


if __name__ == "__main__":
    main()
