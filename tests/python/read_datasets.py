"""Opens every dataset the pipeline writes in the four readers a researcher uses — DuckDB,
PyArrow's dataset API, Polars and pandas — the way the README says to, and checks that they see
the same thing: the expected row count, the same columns with the same types (compared as kinds:
int, float, bool, string, date, timestamp in UTC), no partition key as a category or as text, and
the same values in every column (as multisets, so row order does not matter; floats bit for bit).

Usage: read_datasets.py SPEC.json
SPEC is a JSON list of {"name", "path", "rows", "time": [timestamp columns],
"partitions": {"symbol": "string", "year": "int", ...}} (empty partitions: one Parquet file).
Prints one JSON line per dataset, then exits non-zero if any dataset disagrees.
"""
import datetime
import json
import sys

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.types as pt


def arrow_partitioning(parts):
    """The partitioning the README gives for PyArrow and pandas: plain Hive discovery (integers
    inferred, no dictionaries) when every key is an integer or text; an explicit schema when a key
    is a date, which PyArrow would otherwise read as text."""
    if "date" in parts.values():
        types = {"string": pa.string(), "int": pa.int32(), "date": pa.date32()}
        return ds.partitioning(
            pa.schema([(k, types[v]) for k, v in parts.items()]), flavor="hive"
        )
    return ds.partitioning(flavor="hive")


def kind_arrow(t):
    if pt.is_dictionary(t):
        return "category"
    if pt.is_integer(t):
        return "int"
    if pt.is_floating(t):
        return "float"
    if pt.is_boolean(t):
        return "bool"
    if pt.is_string(t) or pt.is_large_string(t) or getattr(pt, "is_string_view", lambda _: False)(t):
        return "string"
    if pt.is_date(t):
        return "date"
    if pt.is_timestamp(t):
        return f"timestamp[{t.tz}]"
    return str(t)


def kind_duckdb(t):
    if t in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER"):
        return "int"
    if t in ("DOUBLE", "FLOAT"):
        return "float"
    if t == "BOOLEAN":
        return "bool"
    if t == "VARCHAR":
        return "string"
    if t == "DATE":
        return "date"
    if t == "TIMESTAMP WITH TIME ZONE":
        return "timestamp[UTC]"
    return t


def kind_polars(t):
    if t.is_integer():
        return "int"
    if t.is_float():
        return "float"
    if t == pl.Boolean:
        return "bool"
    if t == pl.String:
        return "string"
    if t == pl.Date:
        return "date"
    if isinstance(t, pl.Datetime):
        return f"timestamp[{t.time_zone}]"
    if isinstance(t, pl.Categorical) or isinstance(t, pl.Enum):
        return "category"
    return str(t)


def kind_pandas(s):
    t = s.dtype
    if isinstance(t, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_bool_dtype(t):
        return "bool"
    if pd.api.types.is_integer_dtype(t):
        return "int"
    if pd.api.types.is_float_dtype(t):
        return "float"
    if isinstance(t, pd.DatetimeTZDtype):
        return f"timestamp[{t.tz}]"
    if pd.api.types.is_string_dtype(t) or t == object:
        first = next((v for v in s if v is not None and v == v), None)
        if first is None and len(s) > 0:
            # Only nulls: pandas keeps no type for them (an all-null date column is object).
            return "null"
        if isinstance(first, datetime.date) and not isinstance(first, datetime.datetime):
            return "date"
        return "string"
    return str(t)


CANONICAL = {
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "string": pa.large_string(),
    "timestamp[UTC]": pa.timestamp("us", tz="UTC"),
}


def values(col, kind):
    """A column (any Arrow array) in its kind's canonical type, sorted: the same multiset of
    values gives the same array whatever the reader and the row order. Floats as their bits."""
    col = pc.cast(col.combine_chunks() if hasattr(col, "combine_chunks") else col, CANONICAL[kind])
    if kind == "float":
        bits = col.to_numpy(zero_copy_only=False).view(np.uint64)
        return pa.array(np.sort(bits))
    return pc.take(col, pc.array_sort_indices(col))


def read_all(d):
    path, parts = d["path"], d["partitions"]
    single = not parts
    glob = path if single else f"{path}/**/*.parquet"
    seen = {}

    con = duckdb.connect()
    src = f"read_parquet('{glob}'" + ("" if single else ", hive_partitioning = true") + ")"
    types = {r[0]: kind_duckdb(r[1]) for r in con.execute(f"describe select * from {src}").fetchall()}
    seen["duckdb"] = (types, con.sql(f"select * from {src}").to_arrow_table())

    table = ds.dataset(path, format="parquet", partitioning=None if single else arrow_partitioning(parts)).to_table()
    types = {f.name: kind_arrow(f.type) for f in table.schema}
    seen["pyarrow"] = (types, table)

    if single:
        lf = pl.scan_parquet(path)
    else:
        lf = pl.scan_parquet(glob, hive_partitioning=True)
    pdf = lf.collect()
    types = {c: kind_polars(t) for c, t in pdf.schema.items()}
    seen["polars"] = (types, pdf.to_arrow())

    if single:
        pan = pd.read_parquet(path)
    else:
        pan = pd.read_parquet(path, partitioning=arrow_partitioning(parts))
    types = {c: kind_pandas(pan[c]) for c in pan.columns}
    seen["pandas"] = (types, pa.Table.from_pandas(pan, preserve_index=False))
    return seen


def check(d):
    problems = []
    seen = read_all(d)
    rows = {r: table.num_rows for r, (_, table) in seen.items()}
    for r, n in rows.items():
        if n != d["rows"]:
            problems.append(f"{r} read {n} rows, expected {d['rows']}")
    ref_types = seen["duckdb"][0]
    for r, (types, _) in seen.items():
        if set(types) != set(ref_types):
            problems.append(f"{r} columns {sorted(types)} differ from duckdb's {sorted(ref_types)}")
            continue
        for c, k in types.items():
            all_null = seen["duckdb"][1].column(c).null_count == rows["duckdb"]
            if k == "null" and all_null:
                continue
            if k != ref_types[c]:
                problems.append(f"{r}: column {c} is {k}, duckdb reads {ref_types[c]}")
            if k == "category":
                problems.append(f"{r}: column {c} is a category")
    for c in d["time"]:
        for r, (types, _) in seen.items():
            if types.get(c) != "timestamp[UTC]":
                problems.append(f"{r}: {c} is {types.get(c)}, not a UTC timestamp")
    for key, want in d["partitions"].items():
        for r, (types, _) in seen.items():
            if types.get(key) != want:
                problems.append(f"{r}: partition key {key} is {types.get(key)}, expected {want}")
    if not problems:
        for c, k in ref_types.items():
            ref = values(seen["duckdb"][1].column(c), k)
            for r, (_, table) in seen.items():
                if not values(table.column(c), k).equals(ref):
                    problems.append(f"{r} disagrees with duckdb on the values of {c}")
    return {
        "name": d["name"],
        "rows": rows,
        "types": ref_types,
        "problems": problems,
    }


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    bad = 0
    for d in spec:
        out = check(d)
        print(json.dumps(out))
        bad += bool(out["problems"])
    if not spec:
        sys.exit("no dataset given")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
