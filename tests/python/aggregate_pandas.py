"""A straightforward pandas implementation of features.md section 1 (1m klines -> hourly bars
with microstructure features, funding and metrics joined as of each close), for the aggregate
benchmark: same inputs (the optimized Parquet months the bench staged), same columns.

Usage: aggregate_pandas.py STORE MARKET_DIR SYMBOLS FREQ_MINUTES [CHECK]
Prints one JSON line: rows in, bars out, seconds. Like the job, it writes each symbol's bars
(to STORE/pandas/<freq>/SYMBOL.parquet, zstd); its clock runs from reading the inputs to the
last file written, after its imports. With CHECK=1 it then compares its bars with the
`aggregate` job's output under STORE/features/, outside the clock: it fails on any value outside
features.md's tolerance (1e-9 relative, or 1e-12 absolute) and reports the largest relative
difference beyond the absolute clause, and the largest absolute one.
"""
import glob
import json
import math
import os
import sys
import time

import numpy as np
import pandas as pd

MIN = pd.Timedelta(minutes=1)


def read(pattern):
    files = sorted(glob.glob(pattern, recursive=True))
    if not files:
        return None
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def features(k, funding, metrics, freq_min):
    delta = pd.Timedelta(minutes=freq_min)
    k = k.sort_values("open_time").reset_index(drop=True)
    prev_ok = k["open_time"].diff() == MIN
    k["r"] = np.where(prev_ok, np.log(k["close"] / k["close"].shift(1)), np.nan)
    k["hl2"] = np.log(k["high"] / k["low"]) ** 2
    k["co2"] = np.log(k["close"] / k["open"]) ** 2
    k["gk"] = 0.5 * k["hl2"] - (2 * math.log(2) - 1) * k["co2"]
    k["bar"] = k["open_time"].dt.floor(f"{freq_min}min")
    g = k.groupby("bar", sort=True)
    out = pd.DataFrame(
        {
            "open": g["open"].first(),
            "high": g["high"].max(),
            "low": g["low"].min(),
            "close": g["close"].last(),
            "volume": g["volume"].sum(),
            "quote_volume": g["quote_volume"].sum(),
            "trades": g["trades"].sum(),
            "taker_buy_volume": g["taker_buy_volume"].sum(),
            "taker_buy_quote_volume": g["taker_buy_quote_volume"].sum(),
            "minutes": g["open_time"].count(),
        }
    )
    vol = out["volume"].where(out["volume"] != 0)
    out["vwap"] = out["quote_volume"] / vol
    out["vwap_deviation"] = (out["close"] - out["vwap"]) / out["vwap"]
    n_r = g["r"].count()
    out["realized_vol"] = (g["r"].std(ddof=1) * math.sqrt(freq_min)).where(n_r >= 2)
    out["realized_variance"] = g["r"].apply(lambda r: (r.dropna() ** 2).sum()).where(n_r >= 1)
    mean_v = g["volume"].mean()
    out["volume_cv"] = (g["volume"].std(ddof=1) / mean_v).where(
        (out["minutes"] >= 2) & (mean_v != 0)
    )
    out["taker_buy_ratio"] = out["taker_buy_volume"] / vol
    out["parkinson_vol"] = np.sqrt(g["hl2"].sum() / (4 * math.log(2)))
    out["garman_klass_vol"] = np.sqrt(g["gk"].sum().clip(lower=0))
    out.index.name = "open_time"
    out = out.reset_index()
    out["close_time"] = out["open_time"] + delta - pd.Timedelta(milliseconds=1)
    if funding is not None:
        f = funding.sort_values("calc_time")[["calc_time", "last_funding_rate", "funding_interval_hours"]]
        out = pd.merge_asof(out, f, left_on="close_time", right_on="calc_time", direction="backward")
        stale = (out["close_time"] - out["calc_time"]) > pd.Timedelta(hours=24)
        out["funding_rate"] = out["last_funding_rate"].mask(stale)
        out["funding_interval_hours"] = out["funding_interval_hours"].mask(stale)
        out = out.drop(columns=["calc_time", "last_funding_rate"])
    if metrics is not None:
        m = metrics.sort_values("snapshot_time").rename(
            columns={
                "sum_open_interest": "open_interest",
                "sum_open_interest_value": "open_interest_value",
                "count_toptrader_long_short_ratio": "top_trader_account_ls_ratio",
                "sum_toptrader_long_short_ratio": "top_trader_position_ls_ratio",
                "count_long_short_ratio": "account_ls_ratio",
                "sum_taker_long_short_vol_ratio": "taker_ls_volume_ratio",
            }
        )
        cols = [
            "open_interest",
            "open_interest_value",
            "top_trader_account_ls_ratio",
            "top_trader_position_ls_ratio",
            "account_ls_ratio",
            "taker_ls_volume_ratio",
        ]
        out = pd.merge_asof(
            out, m[["snapshot_time"] + cols], left_on="close_time", right_on="snapshot_time", direction="backward"
        )
        stale = (out["close_time"] - out["snapshot_time"]) > pd.Timedelta(hours=1)
        for c in cols:
            out[c] = out[c].mask(stale)
        out = out.drop(columns=["snapshot_time"])
    return out.drop(columns=["close_time"])


def main():
    store, market, symbols, freq = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
    check = len(sys.argv) > 5 and sys.argv[5] == "1"
    label = "1h" if freq == 60 else f"{freq}m"
    out_dir = f"{store}/pandas/{label}"
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    rows = bars = 0
    written = []
    for sym in symbols:
        k = read(f"{store}/optimized/{market}/klines-1m/symbol={sym}/**/*.parquet")
        f = read(f"{store}/optimized/{market}/fundingRate/symbol={sym}/**/*.parquet")
        m = read(f"{store}/optimized/{market}/metrics/symbol={sym}/**/*.parquet")
        out = features(k, f, m, freq)
        path = f"{out_dir}/{sym}.parquet"
        out.to_parquet(path, compression="zstd", index=False)
        written.append((sym, out))
        rows += len(k)
        bars += len(out)
    secs = time.perf_counter() - t0
    worst = 0.0
    worst_abs = 0.0
    if check:
        for sym, out in written:
            ours = read(f"{store}/features/{market}/{label}/symbol={sym}/**/*.parquet")
            ours = ours.sort_values("open_time").reset_index(drop=True)
            assert len(ours) == len(out), (sym, len(ours), len(out))
            for c in out.columns:
                if c == "open_time":
                    assert (ours[c].values == out[c].values).all(), c
                    continue
                a = ours[c].astype("float64").to_numpy()
                b = out[c].astype("float64").to_numpy()
                assert (np.isnan(a) == np.isnan(b)).all(), f"{sym} {c}: nulls differ"
                ok = ~np.isnan(a)
                if ok.any():
                    # features.md: to 1e-9 relative, or 1e-12 absolute for values that cancel
                    # to near zero (vwap_deviation). The largest relative difference is taken
                    # over the values the absolute clause does not cover.
                    diff = np.abs(a[ok] - b[ok])
                    scale = np.abs(b[ok])
                    bad = (diff > 1e-9 * scale) & (diff > 1e-12)
                    assert not bad.any(), (
                        f"{sym} {c}: {int(bad.sum())} values outside the contract, e.g. "
                        f"{a[ok][bad][0]!r} against {b[ok][bad][0]!r}"
                    )
                    rel = np.where(diff > 1e-12, diff / np.maximum(scale, 1e-300), 0.0)
                    worst = max(worst, float(rel.max()))
                    worst_abs = max(worst_abs, float(diff.max()))
    print(json.dumps({
        "rows": rows, "bars": bars, "seconds": secs,
        "max_rel_diff": worst if check else None,
        "max_abs_diff": worst_abs if check else None,
    }))


if __name__ == "__main__":
    main()
