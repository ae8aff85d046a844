"""numba dollar-imbalance bars (features.md section 3), the baseline of tests/bench/bars.sh.

Usage: bars_numba.py e2e|phases PARQUET INIT ALPHA_TICKS ALPHA_IMBALANCE MIN MAX OUT_JSON

Reads price, quantity, transact_time and is_buyer_maker with pyarrow, runs the bar loop (the
same float operations in the same order as the Rust engine, so the bars are identical) and
writes the bars with pyarrow next to OUT_JSON. `e2e` does just that, once, as a user's script
would (the bench times the whole process); `phases` also times each phase in the process: the
read, the JIT compile, the loop (best of 3), the write, and read + loop + write once compiled.
"""

import json
import sys
import time

T0 = time.perf_counter()
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from numba import njit  # noqa: E402

IMPORT_S = time.perf_counter() - T0


@njit(cache=False)
def kernel(price, qty, t, bm, start, st, sti, out_f, out_t, k, at, ai, lo, hi):
    """Bars from trade `start` on, until the trades end or `out_*` are full; the carried state
    lives in `st` (floats) and `sti` (ticks, open time, close time, primed). Returns the next
    trade and the bar count. (Growing the outputs inside the loop would make numba count
    references in it: 15x slower.)"""
    n = price.shape[0]
    cap = out_f.shape[0]
    threshold, e_t, e_i, theta = st[0], st[1], st[2], st[3]
    vol, dol, buy = st[4], st[5], st[6]
    o, h, lw, c = st[7], st[8], st[9], st[10]
    ticks, ot, ct, primed = sti[0], sti[1], sti[2], sti[3]
    i = start
    while i < n:
        p = price[i]
        v = qty[i]
        b = -1.0 if bm[i] else 1.0
        if ticks == 0:
            o = p
            h = p
            lw = p
            ot = t[i]
        if p > h:
            h = p
        if p < lw:
            lw = p
        c = p
        ct = t[i]
        pv = p * v
        vol += v
        dol += pv
        if b > 0.0:
            buy += v
        ticks += 1
        theta += b * pv
        i += 1
        if abs(theta) >= threshold:
            out_f[k, 0] = o
            out_f[k, 1] = h
            out_f[k, 2] = lw
            out_f[k, 3] = c
            out_f[k, 4] = vol
            out_f[k, 5] = dol
            out_f[k, 6] = buy
            out_f[k, 7] = ticks
            out_f[k, 8] = theta
            out_f[k, 9] = threshold
            out_t[k, 0] = ot
            out_t[k, 1] = ct
            k += 1
            nt_ = float(ticks)
            if primed:
                e_t = at * nt_ + (1.0 - at) * e_t
                e_i = ai * (theta / nt_) + (1.0 - ai) * e_i
            else:
                e_t = nt_
                e_i = theta / nt_
                primed = 1
            raw = e_t * abs(e_i)
            if raw < lo:
                threshold = lo
            elif raw > hi:
                threshold = hi
            else:
                threshold = raw
            ticks = 0
            theta = 0.0
            vol = 0.0
            dol = 0.0
            buy = 0.0
            if k == cap:
                break
    st[0], st[1], st[2], st[3] = threshold, e_t, e_i, theta
    st[4], st[5], st[6] = vol, dol, buy
    st[7], st[8], st[9], st[10] = o, h, lw, c
    sti[0], sti[1], sti[2], sti[3] = ticks, ot, ct, primed
    return i, k


def dollar_imbalance(price, qty, t, bm, init, at, ai, lo, hi):
    cap = 4096
    out_f = np.empty((cap, 10))  # open high low close volume dollar buy ticks imbalance threshold
    out_t = np.empty((cap, 2), np.int64)  # open_time close_time
    st = np.zeros(11)
    st[0] = init
    sti = np.zeros(4, np.int64)
    i, k = 0, 0
    while True:
        i, k = kernel(price, qty, t, bm, i, st, sti, out_f, out_t, k, at, ai, lo, hi)
        if i >= price.shape[0]:
            return out_f[:k], out_t[:k]
        out_f = np.concatenate([out_f, np.empty_like(out_f)])
        out_t = np.concatenate([out_t, np.empty_like(out_t)])


def read(path):
    table = pq.read_table(
        path, columns=["price", "quantity", "transact_time", "is_buyer_maker"]
    )
    price = table.column("price").to_numpy()
    qty = table.column("quantity").to_numpy()
    t = table.column("transact_time").cast(pa.int64()).to_numpy()
    bm = table.column("is_buyer_maker").to_numpy()
    return price, qty, t, bm


def write(out_f, out_t, path):
    cols = ["open", "high", "low", "close", "volume", "dollar_volume", "buy_volume",
            "ticks", "imbalance", "threshold"]
    arrays = {name: out_f[:, j] for j, name in enumerate(cols)}
    arrays["open_time"] = out_t[:, 0]
    arrays["close_time"] = out_t[:, 1]
    pq.write_table(pa.table(arrays), path, compression="zstd")


def main():
    mode, path, init, at, ai, lo, hi, out_json = sys.argv[1:9]
    init, at, ai, lo, hi = map(float, (init, at, ai, lo, hi))
    out_parquet = out_json + ".parquet"
    report = {"import_s": IMPORT_S}

    t = time.perf_counter()
    cols = read(path)
    report["read_s"] = time.perf_counter() - t

    if mode == "phases":
        t = time.perf_counter()
        dollar_imbalance(*(c[:1000] for c in cols), init, at, ai, lo, hi)
        report["compile_s"] = time.perf_counter() - t
        loop_s = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            out_f, out_t = dollar_imbalance(*cols, init, at, ai, lo, hi)
            loop_s = min(loop_s, time.perf_counter() - t)
        report["loop_s"] = loop_s
    else:
        t = time.perf_counter()
        out_f, out_t = dollar_imbalance(*cols, init, at, ai, lo, hi)
        report["compile_and_loop_s"] = time.perf_counter() - t

    t = time.perf_counter()
    write(out_f, out_t, out_parquet)
    report["write_s"] = time.perf_counter() - t

    if mode == "phases":
        # Read + loop + write in this process, the JIT already compiled.
        del cols
        t = time.perf_counter()
        cols = read(path)
        out_f, out_t = dollar_imbalance(*cols, init, at, ai, lo, hi)
        write(out_f, out_t, out_parquet)
        report["warm_e2e_s"] = time.perf_counter() - t

    report.update(
        trades=int(cols[0].shape[0]),
        bars=int(out_f.shape[0]),
        last_imbalance=float(out_f[-1, 8]) if out_f.shape[0] else None,
    )
    with open(out_json, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
