"""An independent pandas implementation of features.md section 2 (the `build` job's panel) for a
static universe (an explicit list or `all`), compared value by value with the job's
final/<name>/panel.parquet.

Usage: build_pandas.py STORE NAME MARKET_DIR SYMBOLS START END [MAX_FFILL MIN_COVERAGE BASE KEEP_NULLS]
  MARKET_DIR: futures-um; SYMBOLS: A,B,C; START/END: inclusive days; BASE: all|listed;
  KEEP_NULLS: 0|1. Reads STORE/features/MARKET_DIR/1h/symbol=S/year=*/part-0.parquet from START
  minus the job's warm-up (168 + MAX_FFILL + 1 hours) to the end of END, like the job.
Prints one JSON line (rows, columns compared, largest relative difference); exits 1 on any
difference in the rows or beyond 1e-9 relative (1e-12 absolute near zero).
"""
import glob
import json
import sys

import numpy as np
import pandas as pd

H = pd.Timedelta(hours=1)
PRICE = ["open", "high", "low", "close"]
ZERO = ["volume", "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume", "minutes"]
COPY = [
    "funding_rate",
    "funding_interval_hours",
    "open_interest",
    "open_interest_value",
    "top_trader_account_ls_ratio",
    "top_trader_position_ls_ratio",
    "account_ls_ratio",
    "taker_ls_volume_ratio",
]
NULL = [
    "vwap",
    "vwap_deviation",
    "realized_vol",
    "realized_variance",
    "volume_cv",
    "taker_buy_ratio",
    "parkinson_vol",
    "garman_klass_vol",
]
DROP_IF_NULL = [
    "ret_1h",
    "ret_24h",
    "ret_168h",
    "atr_14",
    "price_efficiency",
    "turnover_ratio",
    "vol_regime",
    "relative_volume",
]


def safe_div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        r = a / b
    return r.where(b != 0)


def symbol_rows(df, max_ffill):
    """Steps 1-3 for one symbol: the forward-filled rows with their time-series factors."""
    df = df.sort_values("open_time").set_index("open_time")
    grid = pd.date_range(df.index[0], df.index[-1], freq="h")
    r = df.reindex(grid)
    n = len(grid)
    real = r["close"].notna().to_numpy()
    last = np.maximum.accumulate(np.where(real, np.arange(n), -1))
    age = np.arange(n) - last
    present = real | (age <= max_ffill)
    out = pd.DataFrame(index=grid)
    for c in PRICE:
        out[c] = np.where(real, r[c], r["close"].to_numpy()[last])
    for c in ZERO:
        out[c] = np.where(real, r[c], 0.0)
    for c in COPY:
        out[c] = r[c].to_numpy()[last]
    for c in NULL:
        out[c] = np.where(real, r[c], np.nan)
    out = out.where(pd.Series(present, index=grid), np.nan)
    out["filled"] = ~real
    out["present"] = present
    c = out["close"]
    for k in (1, 24, 168):
        out[f"ret_{k}h"] = safe_div(c, c.shift(k)) - 1
    c1 = c.shift(1)
    hl = out["high"] - out["low"]
    tr = np.fmax(hl, np.fmax((out["high"] - c1).abs(), (out["low"] - c1).abs()))
    out["true_range"] = tr.where(out["present"])
    out["atr_14"] = out["true_range"].rolling(14, min_periods=7).mean()
    out["price_efficiency"] = safe_div(out["realized_vol"], safe_div(out["atr_14"], c))
    qv_mean = out["quote_volume"].rolling(24, min_periods=12).mean()
    out["turnover_ratio"] = safe_div(out["quote_volume"], qv_mean)
    rv_mean = out["realized_vol"].rolling(168, min_periods=84).mean()
    out["vol_regime"] = safe_div(out["realized_vol"], rv_mean)
    out = out[out["present"]].drop(columns="present")
    out.index.name = "open_time"
    return out.reset_index()


def main():
    store, name, market, symbols, start, end = sys.argv[1:7]
    max_ffill = int(sys.argv[7]) if len(sys.argv) > 7 else 6
    min_cov = float(sys.argv[8]) if len(sys.argv) > 8 else 0.5
    base = sys.argv[9] if len(sys.argv) > 9 else "all"
    keep_nulls = len(sys.argv) > 10 and sys.argv[10] == "1"
    t_from = pd.Timestamp(start, tz="UTC")
    t_to = pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)
    read_from = t_from - (168 + max_ffill + 1) * H
    frames = []
    spans = {}
    for sym in symbols.split(","):
        files = sorted(glob.glob(f"{store}/features/{market}/1h/symbol={sym}/year=*/part-0.parquet"))
        if not files:
            continue
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        df = df[(df["open_time"] >= read_from) & (df["open_time"] < t_to)]
        if df.empty:
            continue
        rows = symbol_rows(df, max_ffill)
        rows.insert(0, "symbol", sym)
        real = rows[~rows["filled"]]
        spans[sym] = (real["open_time"].min(), real["open_time"].max())
        frames.append(rows)
    p = pd.concat(frames, ignore_index=True)
    p = p[(p["open_time"] >= t_from) & (p["open_time"] < t_to)]
    # Coverage (static universe: members from their first bar on).
    firsts = pd.Series({s: a for s, (a, _) in spans.items()})
    hours = p.groupby("open_time")
    real_count = hours["filled"].apply(lambda f: int((~f).sum()))
    if base == "all":
        base_count = real_count.index.to_series().apply(lambda t: int((firsts <= t).sum()))
    else:
        base_count = real_count.index.to_series().apply(
            lambda t: sum(1 for a, b in spans.values() if a <= t <= b)
        )
    keep_hours = real_count.index[(base_count > 0) & (real_count / base_count >= min_cov)]
    p = p[p["open_time"].isin(keep_hours)].copy()
    med = p.groupby("open_time")["funding_rate"].transform("median")
    p["funding_pressure"] = p["funding_rate"] - med
    mean = p.groupby("open_time")["quote_volume"].transform("mean")
    p["relative_volume"] = safe_div(p["quote_volume"], mean)
    if not keep_nulls:
        p = p[p[DROP_IF_NULL].notna().all(axis=1)]
    p = p.sort_values(["open_time", "symbol"]).reset_index(drop=True)

    job = pd.read_parquet(f"{store}/final/{name}/panel.parquet")
    problems = []
    if list(job.columns[:2]) != ["symbol", "open_time"]:
        problems.append(f"first columns {list(job.columns[:2])}")
    keys_job = list(zip(job["symbol"], job["open_time"]))
    keys_ref = list(zip(p["symbol"], p["open_time"]))
    if keys_job != keys_ref:
        a, b = set(keys_job), set(keys_ref)
        problems.append(
            f"rows differ: job {len(keys_job)}, pandas {len(keys_ref)}; only in job {sorted(a - b)[:5]}, only in pandas {sorted(b - a)[:5]}"
        )
    worst = 0.0
    compared = 0
    if not problems:
        for col in job.columns[2:]:
            a = job[col].to_numpy(dtype=float)
            b = p[col].to_numpy(dtype=float)
            na, nb = np.isnan(a), np.isnan(b)
            if (na != nb).any():
                i = int(np.argmax(na != nb))
                problems.append(f"{col}: null at row {i} ({keys_job[i]}): job {a[i]}, pandas {b[i]}")
                continue
            d = np.abs(a[~na] - b[~nb])
            scale = np.maximum(np.abs(b[~nb]), 1e-3)
            rel = d / scale
            bad = (d > 1e-12) & (rel > 1e-9)
            if bad.any():
                i = int(np.flatnonzero(~na)[np.argmax(bad)])
                problems.append(f"{col}: row {i} ({keys_job[i]}): job {a[i]!r}, pandas {b[i]!r}")
            worst = max(worst, float(rel.max()) if len(rel) else 0.0)
            compared += 1
    print(
        json.dumps(
            {
                "rows": len(job),
                "reference_rows": len(p),
                "columns_compared": compared,
                "max_rel_diff": worst,
                "problems": problems,
            }
        )
    )
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
