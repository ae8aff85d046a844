"""The Qlib round trip of a `build` panel: Qlib itself (pyqlib 0.9.7, `D.features`) reads the
export under final/<name>/qlib/ and must give back the panel's values for every field, at
float32 precision, NaN where the panel has no row or a null; at least one symbol listed after
the calendar's first hour and at least one hour without a row inside a symbol's span must be
among them; and `Ref($close, 24)` must be the close 24 hours earlier. Then `qlib.backtest` trades the
export hour by hour (a top-1 momentum strategy, an equal-weight benchmark) from the first hour
with a day of history to the calendar's last hour, flat (a 60min executor) and nested (a daily
executor over a 60min one): both must reach the last hour, with one report row per step.

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
    backtest = run_backtests(D, problems)
    print(
        json.dumps(
            {
                "backtest": backtest,
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


def run_backtests(D, problems):
    """The flat and the nested hourly backtest over the whole calendar; what they reported."""
    import warnings

    from qlib.backtest import backtest
    from qlib.contrib.strategy import TopkDropoutStrategy

    warnings.simplefilter("ignore")
    cal = D.calendar(freq="60min")
    start, end = cal[24], cal[-1]
    score = D.features(
        D.instruments("all"),
        ["$close/Ref($close, 24) - 1"],
        start_time=cal[0],
        end_time=end,
        freq="60min",
    ).iloc[:, 0]
    # The strategy wants (datetime, instrument); D.features gives (instrument, datetime).
    score = score.swaplevel().sort_index().dropna()
    rets = D.features(
        D.instruments("all"),
        ["$close/Ref($close, 1) - 1"],
        start_time=start,
        end_time=end,
        freq="60min",
    ).iloc[:, 0]
    # Qlib 0.9.7 reads a named benchmark at the daily frequency only; a Series is used as given.
    bench = rets.groupby(level="datetime").mean().fillna(0.0)
    exchange = {
        "freq": "60min",
        "deal_price": "close",
        "limit_threshold": None,
        "open_cost": 0.0004,
        "close_cost": 0.0004,
        "min_cost": 0,
        "trade_unit": None,
    }
    sim = {
        "class": "SimulatorExecutor",
        "module_path": "qlib.backtest.executor",
        "kwargs": {"time_per_step": "60min", "generate_portfolio_metrics": True},
    }
    nested = {
        "class": "NestedExecutor",
        "module_path": "qlib.backtest.executor",
        "kwargs": {
            "time_per_step": "day",
            "inner_executor": sim,
            "inner_strategy": {
                "class": "TWAPStrategy",
                "module_path": "qlib.contrib.strategy.rule_strategy",
            },
            "generate_portfolio_metrics": True,
        },
    }
    hours = int((end - start) / pd.Timedelta(hours=1)) + 1
    days = (end.normalize() - start.normalize()).days + 1
    out = {}
    for name, executor, freq, steps in (
        ("flat", sim, "60min", hours),
        ("nested", nested, "1day", days),
    ):
        try:
            metrics, _ = backtest(
                start_time=start,
                end_time=end,
                strategy=TopkDropoutStrategy(signal=score, topk=1, n_drop=1),
                executor=executor,
                benchmark=bench,
                account=1e6,
                exchange_kwargs=exchange,
            )
        except Exception as e:  # the failure is what the test reports
            problems.append(f"{name} backtest failed: {type(e).__name__}: {e}")
            continue
        report = metrics[freq][0]
        account = report["account"].to_numpy(dtype=float)
        if len(report) != steps:
            problems.append(f"{name} backtest reported {len(report)} {freq} steps, expected {steps}")
        if report.index[-1].normalize() != end.normalize():
            problems.append(f"{name} backtest stopped at {report.index[-1]}, before {end}")
        if not (np.isfinite(account).all() and (account > 0).all()):
            problems.append(f"{name} backtest account is not positive and finite")
        turnover = float(report["turnover"].sum())
        if turnover <= 0:
            problems.append(f"{name} backtest never traded")
        out[name] = {
            "steps": len(report),
            "last": str(report.index[-1]),
            "final_account": float(account[-1]),
            "turnover": turnover,
        }
    return out


if __name__ == "__main__":
    main()
