//! Parser throughput on synthetic UM aggTrades lines generated in memory (no fixture, no I/O):
//! reports rows/s and MB/s for one core. `cargo run --release -p shared --example parse_bench
//! [rows] [chunk_bytes] [repetitions]`.

use std::time::Instant;

use shared::formats::{Columns, Parser, format_of};
use shared::paths::{ArchiveFile, DataType, Dataset, FileDate, Market};

/// CPU time of this thread in seconds (Linux `schedstat`), so that other processes competing for
/// the cores do not count against the parser; `None` elsewhere.
fn thread_cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().map_or(5_000_000, |s| s.parse().expect("rows"));
    let chunk: usize = args
        .next()
        .map_or(1 << 20, |s| s.parse().expect("chunk bytes"));
    let reps: usize = args.next().map_or(5, |s| s.parse().expect("repetitions"));

    // Realistic UM aggTrades: header, 10-digit ids, prices with one decimal, ms times.
    let mut csv = Vec::with_capacity(rows * 70);
    csv.extend_from_slice(
        b"agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n",
    );
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut id, mut trade, mut t) = (3_449_899_747u64, 8_078_264_332u64, 1_789_430_400_003u64);
    for _ in 0..rows {
        let price = 78_000.0 + rng.u32(0..3000) as f64 / 10.0;
        let qty = rng.u32(1..5000) as f64 / 1000.0;
        let n = rng.u64(0..5);
        let maker = if rng.bool() { "true" } else { "false" };
        use std::io::Write;
        writeln!(
            csv,
            "{id},{price:.1},{qty:.3},{trade},{},{t},{maker}",
            trade + n
        )
        .unwrap();
        id += 1;
        trade += n + 1;
        t += rng.u64(0..20);
    }

    let dataset = Dataset::new(Market::Um, DataType::AggTrades, None).unwrap();
    let file = ArchiveFile::new(
        dataset,
        "BTCUSDT",
        "2026-09-15".parse::<FileDate>().unwrap(),
    );
    let format = format_of(&dataset);

    // One output reused across repetitions (`clear` keeps the allocations): the first run pays
    // the page faults of fresh output buffers, the later ones measure the parser alone.
    let mut out = Columns::with_capacity(format, rows);
    let mut best = f64::MAX;
    let mut best_cpu = f64::MAX;
    let mut first_cpu = None;
    for _ in 0..reps {
        out.clear();
        let mut parser = Parser::new(format, "bench", &file);
        let start = Instant::now();
        let cpu_start = thread_cpu_secs();
        for c in csv.chunks(chunk) {
            parser.feed(c, &mut out).unwrap();
        }
        parser.finish(&mut out).unwrap();
        let secs = start.elapsed().as_secs_f64();
        if let (Some(a), Some(b)) = (cpu_start, thread_cpu_secs()) {
            best_cpu = best_cpu.min(b - a);
            first_cpu.get_or_insert(b - a);
        }
        assert_eq!(out.len(), rows);
        best = best.min(secs);
    }
    let mb = csv.len() as f64 / 1e6;
    println!("UM aggTrades: {rows} rows, {mb:.1} MB, chunk {chunk} B, best of {reps}:");
    println!(
        "  wall {best:.3} s = {:.1} M rows/s, {:.0} MB/s",
        rows as f64 / best / 1e6,
        mb / best
    );
    if best_cpu < f64::MAX {
        println!(
            "  cpu  {best_cpu:.3} s = {:.1} M rows/s, {:.0} MB/s (this thread's CPU time)",
            rows as f64 / best_cpu / 1e6,
            mb / best_cpu
        );
    }
    if let Some(first) = first_cpu {
        println!(
            "  first run, fresh output buffers: cpu {first:.3} s = {:.1} M rows/s",
            rows as f64 / first / 1e6
        );
    }
}
