"""The Qlib round trip of a `build` panel: Qlib itself (pyqlib 0.9.7, `D.features`) reads the
export under final/<name>/qlib/ and must give back the panel's values for every field, at
float32 precision, NaN where the panel has no row or a null; at least one symbol listed after
the calendar's first hour and at least one hour without a row inside a symbol's span must be
among them; and `Ref($close, 24)` must be the close 24 hours earlier.

Usage: qlib_roundtrip.py QLIB_DIR PANEL_PARQUET
Prints one JSON line; exits 1 on any difference.
"""
import json
import sys

import numpy as np
import pandas as pd


def main():
    root, panel_path = sys.argv[1:3]
    import qlib
    from qlib.data import D

    qlib.init(provider_uri=root, region="us", kernels=1)
    panel = pd.read_parquet(panel_path)
    panel["datetime"] = panel["open_time"].dt.tz_convert("UTC").dt.tz_localize(None)
    fields = [c for c in panel.columns if c not in ("symbol", "open_time", "datetime")]
    start, end = panel["datetime"].min(), panel["datetime"].max()
    problems = []

    cal = D.calendar(start_time=start, end_time=end, freq="60min")
    if len(cal) != int((end - start) / pd.Timedelta(hours=1)) + 1:
        problems.append(f"calendar has {len(cal)} hours between {start} and {end}: not continuous")

    got = D.features(
        D.instruments("all"),
        ["$" + f for f in fields],
        start_time=start,
        end_time=end,
        freq="60min",
    )
    got.columns = fields
    got = got.reset_index()
    got["instrument"] = got["instrument"].str.upper()
    want = panel.set_index(["symbol", "datetime"])
    g = got.set_index(["instrument", "datetime"])
    missing = want.index.difference(g.index)
    if len(missing):
        problems.append(f"{len(missing)} panel rows qlib does not return, e.g. {list(missing[:3])}")
    common = want.index.intersection(g.index)
    for f in fields:
        w = want.loc[common, f].to_numpy(dtype=float).astype(np.float32)
        q = g.loc[common, f].to_numpy(dtype=np.float32)
        nw, nq = np.isnan(w), np.isnan(q)
        if (nw != nq).any() or (w[~nw] != q[~nq]).any():
            i = int(np.argmax((nw != nq) | np.where(nw | nq, False, w != q)))
            problems.append(f"{f}: {common[i]}: panel {w[i]!r}, qlib {q[i]!r}")
    # Hours inside a symbol's span without a panel row: every field NaN.
    extra = g.index.difference(want.index)
    if len(extra) == 0:
        problems.append("no hour without a row inside a symbol's span: the NaN gaps are untested")
    elif not np.isnan(g.loc[extra].to_numpy(dtype=np.float32)).all():
        problems.append("an hour without a panel row has a value in qlib")
    # A late-listed symbol: its first hour after the calendar's first.
    firsts = panel.groupby("symbol")["datetime"].min()
    late = firsts[firsts > start]
    if late.empty:
        problems.append("no late-listed symbol in the panel: that case is untested")
    # Ref($close, 24) is the close 24 hours earlier (NaN where that hour has no row).
    ref = D.features(
        D.instruments("all"),
        ["$close", "Ref($close, 24)"],
        start_time=start,
        end_time=end,
        freq="60min",
    )
    ref.columns = ["close", "close_24"]
    ref = ref.reset_index()
    ref["instrument"] = ref["instrument"].str.upper()
    closes = want["close"].astype(np.float32)
    key = list(zip(ref["instrument"], ref["datetime"] - pd.Timedelta(hours=24)))
    expect = np.array([closes.get(k, np.nan) for k in key], dtype=np.float32)
    actual = ref["close_24"].to_numpy(dtype=np.float32)
    ok = (np.isnan(expect) & np.isnan(actual)) | (expect == actual)
    if not ok.all():
        i = int(np.argmin(ok))
        problems.append(f"Ref($close, 24) at {key[i]}: expected {expect[i]!r}, got {actual[i]!r}")
    checked_ref = int((~np.isnan(expect)).sum())
    if checked_ref == 0:
        problems.append("no close 24 hours earlier to compare")
    print(
        json.dumps(
            {
                "rows": len(panel),
                "fields": len(fields),
                "calendar_hours": len(cal),
                "nan_gap_hours": int(len(extra)),
                "late_listed": list(late.index),
                "ref_close_24_compared": checked_ref,
                "problems": problems,
            }
        )
    )
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
