//! Tests of the registry and the parser: every real fixture in `tests/fixtures/binance/` (real
//! archive files, their sources in its `SOURCES.md`) — first and last rows, every column, row
//! count — and the quirks of binance-archive.md §3–§4 on small synthetic inputs (marked as
//! such). Cell-level parsing is tested in `cell.rs`.

use super::*;
use crate::error::{Error, Result};
use crate::paths::{ArchiveFile, DataType, Dataset, FileDate, Interval, Market};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/binance");

/// One cell, for comparing whole rows.
#[derive(Debug, Clone, PartialEq)]
enum V {
    I(i64),
    F(f64),
    O(Option<f64>),
    B(bool),
    S(&'static str),
    /// µs since the epoch.
    T(i64),
}
use V::*;

fn row(c: &Columns, i: usize) -> Vec<V> {
    c.names()
        .iter()
        .map(|n| match c.column(n).unwrap() {
            ColumnData::I64(v) => I(v[i]),
            ColumnData::F64(v) => F(v[i]),
            ColumnData::OptF64(v) => O(v[i]),
            ColumnData::Bool(v) => B(v[i]),
            ColumnData::Str(v) => S(v[i].clone().leak()),
            ColumnData::TimeUs(v) => T(v[i]),
        })
        .collect()
}

fn file(market: Market, dt: DataType, interval: Option<Interval>, date: &str) -> ArchiveFile {
    let ds = Dataset::new(market, dt, interval).unwrap();
    ArchiveFile::new(ds, "BTCUSDT", date.parse::<FileDate>().unwrap())
}

fn parse_with(f: &ArchiveFile, bytes: &[u8], chunks: &[usize]) -> Result<(Columns, ParseStats)> {
    let format = format_of(&f.dataset);
    let mut out = Columns::new(format);
    let mut p = Parser::new(format, "test.csv", f);
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let n = if chunks.is_empty() {
            rest.len()
        } else {
            chunks[i % chunks.len()].clamp(1, rest.len())
        };
        p.feed(&rest[..n], &mut out)?;
        rest = &rest[n..];
        i += 1;
    }
    p.finish(&mut out)?;
    Ok((out, p.stats()))
}

fn parse(f: &ArchiveFile, bytes: &str) -> Result<(Columns, ParseStats)> {
    parse_with(f, bytes.as_bytes(), &[])
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{rel}")).unwrap()
}

/// Parse a fixture whole, then byte by byte and in random chunk sizes: all three must agree.
fn fixture(rel: &str, f: &ArchiveFile) -> (Columns, ParseStats) {
    let bytes = read(rel);
    let (whole, stats) = parse_with(f, &bytes, &[]).unwrap();
    let (bytewise, s1) = parse_with(f, &bytes, &[1]).unwrap();
    assert_eq!(whole, bytewise, "{rel}: byte by byte");
    assert_eq!(stats, s1);
    let mut rng = fastrand::Rng::with_seed(rel.len() as u64);
    let sizes: Vec<usize> = (0..64).map(|_| rng.usize(1..200)).collect();
    let (chunked, s2) = parse_with(f, &bytes, &sizes).unwrap();
    assert_eq!(whole, chunked, "{rel}: random chunks");
    assert_eq!(stats, s2);
    (whole, stats)
}

fn schema_err(r: Result<(Columns, ParseStats)>) -> (u64, String, String) {
    match r {
        Err(Error::Schema {
            path,
            line,
            column,
            reason,
        }) => {
            assert_eq!(path, "test.csv");
            (line, column, reason)
        }
        Err(e) => panic!("expected a schema error, got {e}"),
        Ok((c, _)) => panic!("expected a schema error, parsed {} rows", c.len()),
    }
}

// ---------------------------------------------------------------------------------------------
// Registry

fn all_datasets() -> Vec<Dataset> {
    let mut out = Vec::new();
    for m in Market::ALL {
        for dt in DataType::ALL {
            let interval = dt.is_kline_family().then_some(Interval::H1);
            if let Ok(d) = Dataset::new(m, dt, interval) {
                out.push(d);
            }
        }
    }
    out
}

#[test]
fn every_dataset_has_a_consistent_format() {
    let datasets = all_datasets();
    assert!(datasets.len() >= 25, "{}", datasets.len());
    for d in datasets {
        let f = format_of(&d);
        let outs = f.output_fields();
        let names: Vec<_> = outs.iter().map(|(n, _)| *n).collect();
        let mut uniq = names.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(
            uniq.len(),
            names.len(),
            "{}: duplicate output names",
            f.name
        );
        assert_eq!(
            f.output_kind(f.time_field),
            Some(OutKind::TimeUs),
            "{}: time_field",
            f.name
        );
        for k in f.key.iter().chain(f.sort) {
            assert!(names.contains(k), "{}: key/sort column {k}", f.name);
        }
        assert!(!f.sort.is_empty());
        for field in f.fields {
            assert!(field.headers.iter().all(|h| *h == h.to_lowercase()));
        }
        assert!(
            names
                .iter()
                .all(|n| !n.contains("ignore") && *n != "is_best_match")
        );
    }
}

fn schema(d: Dataset) -> Vec<(&'static str, OutKind)> {
    format_of(&d).output_fields()
}

fn ds(m: Market, dt: DataType) -> Dataset {
    Dataset::new(m, dt, dt.is_kline_family().then_some(Interval::M1)).unwrap()
}

#[test]
fn normalized_schemas() {
    use OutKind::*;
    let klines = vec![
        ("open_time", TimeUs),
        ("open", F64),
        ("high", F64),
        ("low", F64),
        ("close", F64),
        ("volume", F64),
        ("close_time", TimeUs),
        ("quote_volume", F64),
        ("trades", I64),
        ("taker_buy_volume", F64),
        ("taker_buy_quote_volume", F64),
    ];
    for m in [Market::Spot, Market::Um, Market::Cm] {
        assert_eq!(schema(ds(m, DataType::Klines)), klines);
    }
    for dt in [
        DataType::MarkPriceKlines,
        DataType::IndexPriceKlines,
        DataType::PremiumIndexKlines,
    ] {
        assert_eq!(schema(ds(Market::Um, dt)), klines);
    }
    let agg = vec![
        ("agg_trade_id", I64),
        ("price", F64),
        ("quantity", F64),
        ("first_trade_id", I64),
        ("last_trade_id", I64),
        ("transact_time", TimeUs),
        ("is_buyer_maker", Bool),
    ];
    for m in [Market::Spot, Market::Um, Market::Cm] {
        assert_eq!(schema(ds(m, DataType::AggTrades)), agg);
    }
    assert_eq!(
        format_of(&ds(Market::Spot, DataType::AggTrades))
            .fields
            .len(),
        8
    );
    let trades = |fourth| {
        vec![
            ("id", I64),
            ("price", F64),
            ("qty", F64),
            (fourth, F64),
            ("time", TimeUs),
            ("is_buyer_maker", Bool),
        ]
    };
    assert_eq!(
        schema(ds(Market::Spot, DataType::Trades)),
        trades("quote_qty")
    );
    assert_eq!(
        schema(ds(Market::Um, DataType::Trades)),
        trades("quote_qty")
    );
    assert_eq!(schema(ds(Market::Cm, DataType::Trades)), trades("base_qty"));
    assert_eq!(
        schema(ds(Market::Um, DataType::FundingRate)),
        vec![
            ("calc_time", TimeUs),
            ("funding_interval_hours", I64),
            ("last_funding_rate", F64)
        ]
    );
    assert_eq!(
        schema(ds(Market::Cm, DataType::Metrics)),
        vec![
            ("create_time", TimeUs),
            ("sum_open_interest", F64),
            ("sum_open_interest_value", F64),
            ("count_toptrader_long_short_ratio", OptF64),
            ("sum_toptrader_long_short_ratio", OptF64),
            ("count_long_short_ratio", OptF64),
            ("sum_taker_long_short_vol_ratio", OptF64),
            ("snapshot_time", TimeUs),
        ]
    );
    assert_eq!(
        schema(ds(Market::Um, DataType::BookTicker)),
        vec![
            ("update_id", I64),
            ("best_bid_price", F64),
            ("best_bid_qty", F64),
            ("best_ask_price", F64),
            ("best_ask_qty", F64),
            ("transaction_time", TimeUs),
            ("event_time", TimeUs),
        ]
    );
    assert_eq!(
        schema(ds(Market::Um, DataType::BookDepth)),
        vec![
            ("timestamp", TimeUs),
            ("percentage", F64),
            ("depth", F64),
            ("notional", F64)
        ]
    );
    let liq = schema(ds(Market::Cm, DataType::LiquidationSnapshot));
    assert_eq!(liq.len(), 10);
    assert_eq!(liq[0], ("time", TimeUs));
    assert_eq!(liq[1], ("side", Str));
    assert_eq!(liq[9], ("accumulated_fill_quantity", F64));
    assert_eq!(
        schema(ds(Market::Option, DataType::BvolIndex)),
        vec![
            ("calc_time", TimeUs),
            ("base_asset", Str),
            ("quote_asset", Str),
            ("index_value", F64)
        ]
    );
    let eoh = schema(ds(Market::Option, DataType::EohSummary));
    assert_eq!(eoh.len(), 25);
    assert_eq!(eoh[0], ("time", TimeUs));
    assert_eq!(eoh[1], ("contract", Str));
    assert_eq!(eoh[4], ("strike", Str));
    assert_eq!(eoh[15], ("best_buy_iv", OptF64));
    assert_eq!(eoh[18], ("mark_iv", OptF64));
    assert_eq!(eoh[24], ("openinterest_usdt", OptF64));
}

#[test]
fn time_fields_keys_and_sorts() {
    let check = |m, dt, time: &str, key: &[&str], sort: &[&str]| {
        let f = format_of(&ds(m, dt));
        assert_eq!((f.time_field, f.key, f.sort), (time, key, sort), "{dt}");
    };
    use DataType::*;
    check(
        Market::Spot,
        Klines,
        "open_time",
        &["open_time"],
        &["open_time"],
    );
    let agg = ["transact_time", "agg_trade_id"];
    check(Market::Spot, AggTrades, agg[0], &agg[1..], &agg);
    check(Market::Um, AggTrades, agg[0], &agg[1..], &agg);
    check(Market::Cm, Trades, "time", &["id"], &["time", "id"]);
    check(
        Market::Um,
        FundingRate,
        "calc_time",
        &["calc_time"],
        &["calc_time"],
    );
    check(
        Market::Um,
        Metrics,
        "create_time",
        &["snapshot_time"],
        &["snapshot_time"],
    );
    check(
        Market::Um,
        BookTicker,
        "transaction_time",
        &["update_id"],
        &["transaction_time", "update_id"],
    );
    let depth = ["timestamp", "percentage"];
    check(Market::Um, BookDepth, "timestamp", &depth, &depth);
    check(Market::Cm, LiquidationSnapshot, "time", &[], &["time"]);
    check(
        Market::Option,
        BvolIndex,
        "calc_time",
        &["calc_time"],
        &["calc_time"],
    );
    check(
        Market::Option,
        EohSummary,
        "time",
        &["time", "contract"],
        &["time", "contract"],
    );
}

// ---------------------------------------------------------------------------------------------
// Real fixtures: first and last rows, every column; times converted by hand from the file text.

#[test]
fn fixture_um_klines_1h_header() {
    let f = file(
        Market::Um,
        DataType::Klines,
        Some(Interval::H1),
        "2026-09-15",
    );
    let (c, s) = fixture("um/BTCUSDT-1h-2026-09-15.csv", &f);
    assert_eq!((c.len(), s.rows, s.had_header, s.lines), (3, 3, true, 4));
    assert_eq!(
        s.time_units,
        vec![
            ("open_time", TimeUnit::Millis),
            ("close_time", TimeUnit::Millis)
        ]
    );
    // 1789430400000,78153.00,78223.30,77905.50,77928.50,5124.846,1789433999999,
    // 399835975.06250,109441,2423.990,189098398.43360,0
    assert_eq!(
        row(&c, 0),
        vec![
            T(1_789_430_400_000_000),
            F(78153.0),
            F(78223.3),
            F(77905.5),
            F(77928.5),
            F(5124.846),
            T(1_789_433_999_999_000),
            F(399835975.0625),
            I(109441),
            F(2423.99),
            F(189098398.4336),
        ]
    );
    // 1789437600000,77888.20,77991.10,77757.20,77878.30,3957.125,1789441199999,
    // 308198483.13600,83355,2150.012,167457809.20640,0
    assert_eq!(
        row(&c, 2),
        vec![
            T(1_789_437_600_000_000),
            F(77888.2),
            F(77991.1),
            F(77757.2),
            F(77878.3),
            F(3957.125),
            T(1_789_441_199_999_000),
            F(308198483.136),
            I(83355),
            F(2150.012),
            F(167457809.2064),
        ]
    );
}

#[test]
fn fixture_um_klines_5m_2019_crlf_no_header() {
    let f = file(Market::Um, DataType::Klines, Some(Interval::M5), "2019-09");
    let (c, s) = fixture("um/BTCUSDT-5m-2019-09.csv", &f);
    assert_eq!((c.len(), s.had_header, s.lines), (2000, false, 2000));
    // 1567965300000,10000,10000,10000,10000,0.002,1567965599999,20,2,0.001,10,0
    assert_eq!(
        row(&c, 0),
        vec![
            T(1_567_965_300_000_000),
            F(10000.0),
            F(10000.0),
            F(10000.0),
            F(10000.0),
            F(0.002),
            T(1_567_965_599_999_000),
            F(20.0),
            I(2),
            F(0.001),
            F(10.0),
        ]
    );
    // 1568565000000,10310.14,10321.38,10310.14,10319.11,69.124,1568565299999,713171.79711,81,
    // 60.312,622258.67480,0
    assert_eq!(
        row(&c, 1999),
        vec![
            T(1_568_565_000_000_000),
            F(10310.14),
            F(10321.38),
            F(10310.14),
            F(10319.11),
            F(69.124),
            T(1_568_565_299_999_000),
            F(713171.79711),
            I(81),
            F(60.312),
            F(622258.6748),
        ]
    );
}

#[test]
fn fixture_um_agg_trades() {
    let f = file(Market::Um, DataType::AggTrades, None, "2026-09-15");
    let (c, s) = fixture("um/BTCUSDT-aggTrades-2026-09-15.csv", &f);
    assert_eq!((c.len(), s.had_header, s.dropped_invalid), (5, true, 0));
    // 3449899747,78153.0,0.001,8078264332,8078264332,1789430400003,false
    assert_eq!(
        row(&c, 0),
        vec![
            I(3449899747),
            F(78153.0),
            F(0.001),
            I(8078264332),
            I(8078264332),
            T(1_789_430_400_003_000),
            B(false),
        ]
    );
    // 3449899751,78152.3,0.001,8078264346,8078264346,1789430400008,true
    assert_eq!(
        row(&c, 4),
        vec![
            I(3449899751),
            F(78152.3),
            F(0.001),
            I(8078264346),
            I(8078264346),
            T(1_789_430_400_008_000),
            B(true),
        ]
    );
}

#[test]
fn fixture_um_trades() {
    let f = file(Market::Um, DataType::Trades, None, "2026-09-15");
    let (c, s) = fixture("um/BTCUSDT-trades-2026-09-15.csv", &f);
    assert_eq!((c.len(), s.had_header), (3, true));
    // 8078264332,78153.0,0.001,78.153,1789430400003,false
    assert_eq!(
        row(&c, 0),
        vec![
            I(8078264332),
            F(78153.0),
            F(0.001),
            F(78.153),
            T(1_789_430_400_003_000),
            B(false),
        ]
    );
    // 8078264334,78152.9,0.084,6564.8436,1789430400008,true
    assert_eq!(
        row(&c, 2),
        vec![
            I(8078264334),
            F(78152.9),
            F(0.084),
            F(6564.8436),
            T(1_789_430_400_008_000),
            B(true),
        ]
    );
}

#[test]
fn fixture_um_book_ticker() {
    let f = file(Market::Um, DataType::BookTicker, None, "2024-01-15");
    let (c, s) = fixture("um/BTCUSDT-bookTicker-2024-01-15.csv", &f);
    assert_eq!((c.len(), s.had_header), (3, true));
    // 3831603310899,41734.90000000,0.70200000,41735.00000000,2.03300000,1705276800014,1705276800018
    assert_eq!(
        row(&c, 0),
        vec![
            I(3831603310899),
            F(41734.9),
            F(0.702),
            F(41735.0),
            F(2.033),
            T(1_705_276_800_014_000),
            T(1_705_276_800_018_000),
        ]
    );
    // 3831603312037,41734.90000000,0.62800000,41735.00000000,1.99000000,1705276800029,1705276800034
    assert_eq!(
        row(&c, 2),
        vec![
            I(3831603312037),
            F(41734.9),
            F(0.628),
            F(41735.0),
            F(1.99),
            T(1_705_276_800_029_000),
            T(1_705_276_800_034_000),
        ]
    );
}

#[test]
fn fixture_um_book_depth() {
    let f = file(Market::Um, DataType::BookDepth, None, "2026-09-15");
    let (c, s) = fixture("um/BTCUSDT-bookDepth-2026-09-15.csv", &f);
    assert_eq!((c.len(), s.had_header), (3, true));
    assert!(s.time_units.is_empty());
    // 2026-09-15 00:00:06 = 1789430406 s. -5.00,9258.55500000,707988857.24850000
    assert_eq!(
        row(&c, 0),
        vec![
            T(1_789_430_406_000_000),
            F(-5.0),
            F(9258.555),
            F(707988857.2485),
        ]
    );
    // 2026-09-15 00:00:06,-3.00,6411.43200000,494014091.23180000
    assert_eq!(
        row(&c, 2),
        vec![
            T(1_789_430_406_000_000),
            F(-3.0),
            F(6411.432),
            F(494014091.2318),
        ]
    );
}

#[test]
fn fixture_um_metrics_start_labelled() {
    // Dated after 2026-06-25: start-labelled, so snapshot_time = create_time + 5 min.
    let f = file(Market::Um, DataType::Metrics, None, "2026-09-15");
    let (c, s) = fixture("um/BTCUSDT-metrics-2026-09-15.csv", &f);
    assert_eq!((c.len(), s.had_header), (2, true));
    // 2026-09-15 00:00:00 = 1789430400 s.
    assert_eq!(
        row(&c, 0),
        vec![
            T(1_789_430_400_000_000),
            F(103513.561),
            F(8088539305.1839),
            O(Some(1.2179119)),
            O(Some(2.069134)),
            O(Some(1.17124703)),
            O(Some(1.126549)),
            T(1_789_430_700_000_000),
        ]
    );
    // 2026-09-15 00:25:00 = 1789431900 s.
    assert_eq!(
        row(&c, 1),
        vec![
            T(1_789_431_900_000_000),
            F(103351.079),
            F(8059947582.0019),
            O(Some(1.2279813)),
            O(Some(2.085938)),
            O(Some(1.18010094)),
            O(Some(0.7309)),
            T(1_789_432_200_000_000),
        ]
    );
}

#[test]
fn fixture_um_funding_2020() {
    let f = file(Market::Um, DataType::FundingRate, None, "2020-01");
    let (c, s) = fixture("um/BTCUSDT-fundingRate-2020-01.csv", &f);
    assert_eq!((c.len(), s.had_header), (93, true));
    // 1577836800000,8,-0.00012359
    assert_eq!(
        row(&c, 0),
        vec![T(1_577_836_800_000_000), I(8), F(-0.00012359)]
    );
    // 1580486400000,8,0.00039858
    assert_eq!(
        row(&c, 92),
        vec![T(1_580_486_400_000_000), I(8), F(0.00039858)]
    );
}

#[test]
fn fixture_um_funding_interval_changes() {
    let f = file(Market::Um, DataType::FundingRate, None, "2026-01");
    let (c, _) = fixture("um/AXSUSDT-fundingRate-2026-01.csv", &f);
    assert_eq!(c.len(), 292);
    // 1767225600008,8,0.00009600 (ms jitter kept)
    assert_eq!(
        row(&c, 0),
        vec![T(1_767_225_600_008_000), I(8), F(0.000096)]
    );
    // 1769889600012,4,-0.00025414
    assert_eq!(
        row(&c, 291),
        vec![T(1_769_889_600_012_000), I(4), F(-0.00025414)]
    );
    let hours = c
        .column("funding_interval_hours")
        .unwrap()
        .as_i64()
        .unwrap();
    let count = |h| hours.iter().filter(|&&x| x == h).count();
    assert_eq!((count(8), count(1), count(4)), (51, 207, 34));
}

#[test]
fn fixture_spot_klines_1m_micros() {
    let f = file(
        Market::Spot,
        DataType::Klines,
        Some(Interval::M1),
        "2026-09-15",
    );
    let (c, s) = fixture("spot/BTCUSDT-1m-2026-09-15.csv", &f);
    assert_eq!((c.len(), s.had_header), (4, false));
    assert_eq!(
        s.time_units,
        vec![
            ("open_time", TimeUnit::Micros),
            ("close_time", TimeUnit::Micros)
        ]
    );
    // 1789430400000000,78189.20000000,78200.23000000,78176.65000000,78199.66000000,3.48107000,
    // 1789430459999999,272165.78776570,1076,1.44229000,112765.69532040,0
    assert_eq!(
        row(&c, 0),
        vec![
            T(1_789_430_400_000_000),
            F(78189.2),
            F(78200.23),
            F(78176.65),
            F(78199.66),
            F(3.48107),
            T(1_789_430_459_999_999),
            F(272165.7877657),
            I(1076),
            F(1.44229),
            F(112765.6953204),
        ]
    );
    // 1789430580000000,78221.02000000,78221.02000000,78206.21000000,78218.50000000,7.02930000,
    // 1789430639999999,549797.14550280,1156,3.21754000,251656.02233520,0
    assert_eq!(
        row(&c, 3),
        vec![
            T(1_789_430_580_000_000),
            F(78221.02),
            F(78221.02),
            F(78206.21),
            F(78218.5),
            F(7.0293),
            T(1_789_430_639_999_999),
            F(549797.1455028),
            I(1156),
            F(3.21754),
            F(251656.0223352),
        ]
    );
}

#[test]
fn fixture_spot_klines_1s() {
    let f = file(
        Market::Spot,
        DataType::Klines,
        Some(Interval::S1),
        "2026-09-05",
    );
    let (c, _) = fixture("spot/BTCUSDT-1s-2026-09-05.csv", &f);
    assert_eq!(c.len(), 5);
    // 1788566400000000,79660.77000000,79660.77000000,79660.76000000,79660.77000000,0.01367000,
    // 1788566400999999,1088.96271990,5,0.01307000,1041.16626390,0
    assert_eq!(
        row(&c, 0),
        vec![
            T(1_788_566_400_000_000),
            F(79660.77),
            F(79660.77),
            F(79660.76),
            F(79660.77),
            F(0.01367),
            T(1_788_566_400_999_999),
            F(1088.9627199),
            I(5),
            F(0.01307),
            F(1041.1662639),
        ]
    );
    // 1788566404000000,79660.77000000,79660.77000000,79660.77000000,79660.77000000,0.00052000,
    // 1788566404999999,41.42360040,3,0.00052000,41.42360040,0
    assert_eq!(
        row(&c, 4),
        vec![
            T(1_788_566_404_000_000),
            F(79660.77),
            F(79660.77),
            F(79660.77),
            F(79660.77),
            F(0.00052),
            T(1_788_566_404_999_999),
            F(41.4236004),
            I(3),
            F(0.00052),
            F(41.4236004),
        ]
    );
}

#[test]
fn fixture_spot_agg_trades_2019_millis() {
    let f = file(Market::Spot, DataType::AggTrades, None, "2019-06-01");
    let (c, s) = fixture("spot/BTCUSDT-aggTrades-2019-06-01.csv", &f);
    assert_eq!((c.len(), s.had_header, s.dropped_invalid), (5, false, 0));
    assert_eq!(s.time_units, vec![("transact_time", TimeUnit::Millis)]);
    // 118868570,8555.00000000,0.35056100,130200817,130200817,1559347200097,True,True
    assert_eq!(
        row(&c, 0),
        vec![
            I(118868570),
            F(8555.0),
            F(0.350561),
            I(130200817),
            I(130200817),
            T(1_559_347_200_097_000),
            B(true),
        ]
    );
    // 118868574,8555.00000000,0.06312800,130200821,130200821,1559347200547,True,True
    assert_eq!(
        row(&c, 4),
        vec![
            I(118868574),
            F(8555.0),
            F(0.063128),
            I(130200821),
            I(130200821),
            T(1_559_347_200_547_000),
            B(true),
        ]
    );
}

#[test]
fn fixture_spot_agg_trades_2023() {
    let f = file(Market::Spot, DataType::AggTrades, None, "2023-11-17");
    let (c, _) = fixture("spot/BTCUSDT-aggTrades-2023-11-17.csv", &f);
    assert_eq!(c.len(), 4);
    // 2759293842,36163.51000000,0.00207000,3284106384,3284106384,1700179200000,True,True
    assert_eq!(
        row(&c, 0),
        vec![
            I(2759293842),
            F(36163.51),
            F(0.00207),
            I(3284106384),
            I(3284106384),
            T(1_700_179_200_000_000),
            B(true),
        ]
    );
    // 2759293845,36163.52000000,0.00199000,3284106387,3284106387,1700179200005,False,True
    assert_eq!(
        row(&c, 3),
        vec![
            I(2759293845),
            F(36163.52),
            F(0.00199),
            I(3284106387),
            I(3284106387),
            T(1_700_179_200_005_000),
            B(false),
        ]
    );
}

#[test]
fn fixture_spot_agg_trades_2026_micros() {
    let f = file(Market::Spot, DataType::AggTrades, None, "2026-09-15");
    let (c, s) = fixture("spot/BTCUSDT-aggTrades-2026-09-15.csv", &f);
    assert_eq!(c.len(), 5);
    assert_eq!(s.time_units, vec![("transact_time", TimeUnit::Micros)]);
    // 4063759318,78189.20000000,0.00009000,6681954163,6681954164,1789430400017025,True,True
    assert_eq!(
        row(&c, 0),
        vec![
            I(4063759318),
            F(78189.2),
            F(0.00009),
            I(6681954163),
            I(6681954164),
            T(1_789_430_400_017_025),
            B(true),
        ]
    );
    // 4063759322,78189.21000000,0.02830000,6681954169,6681954169,1789430400830198,False,True
    assert_eq!(
        row(&c, 4),
        vec![
            I(4063759322),
            F(78189.21),
            F(0.0283),
            I(6681954169),
            I(6681954169),
            T(1_789_430_400_830_198),
            B(false),
        ]
    );
}

#[test]
fn fixture_option_eoh_summary() {
    let f = file(Market::Option, DataType::EohSummary, None, "2023-10-20");
    let (c, s) = fixture("option/BTCUSDT-EOHSummary-2023-10-20.csv", &f);
    assert_eq!((c.len(), s.had_header, s.lines), (999, true, 1000));
    // 2023-10-20,01,BTC-231229-34000-C,BTCUSDT,C,231229-34000,725.00000000,725.00000000,
    // 725.00000000,725.00000000,0E-8,0E-8,745.00000000,780.00000000,5.81000000,1.29000000,"",
    // 0.48220694,762.40000000,0.47771484,0.23858728,0.00005159,38.95827352,-13.24622221,
    // 4.98000000,142676.47973646
    // 2023-10-20 01:00:00 = 1697763600 s.
    assert_eq!(
        row(&c, 0),
        vec![
            T(1_697_763_600_000_000),
            S("BTC-231229-34000-C"),
            S("BTCUSDT"),
            S("C"),
            S("231229-34000"),
            F(725.0),
            F(725.0),
            F(725.0),
            F(725.0),
            F(0.0),
            F(0.0),
            F(745.0),
            F(780.0),
            F(5.81),
            F(1.29),
            O(None),
            O(Some(0.48220694)),
            F(762.4),
            O(Some(0.47771484)),
            F(0.23858728),
            F(0.00005159),
            F(38.95827352),
            F(-13.24622221),
            O(Some(4.98)),
            O(Some(142676.47973646)),
        ]
    );
    // 2023-10-20,15,BTC-231027-27000-P,BTCUSDT,P,231027-27000,100.00000000,100.00000000,
    // 55.00000000,65.00000000,17.87000000,17.87000000,50.00000000,55.00000000,5.25000000,
    // 9.08000000,"",0.45552313,52.00000000,0.45059621,-0.06517867,0.00007061,5.07454913,
    // -17.14926489,262.75000000,7764091.88574159
    // 2023-10-20 15:00:00 = 1697814000 s.
    assert_eq!(
        row(&c, 998),
        vec![
            T(1_697_814_000_000_000),
            S("BTC-231027-27000-P"),
            S("BTCUSDT"),
            S("P"),
            S("231027-27000"),
            F(100.0),
            F(100.0),
            F(55.0),
            F(65.0),
            F(17.87),
            F(17.87),
            F(50.0),
            F(55.0),
            F(5.25),
            F(9.08),
            O(None),
            O(Some(0.45552313)),
            F(52.0),
            O(Some(0.45059621)),
            F(-0.06517867),
            F(0.00007061),
            F(5.07454913),
            F(-17.14926489),
            O(Some(262.75)),
            O(Some(7764091.88574159)),
        ]
    );
    // Line 84: `…,"",-1E-8,…,"",""`: blank open interest is null, `-1E-8` parses.
    assert_eq!(row(&c, 82)[16], O(Some(-1e-8)));
    assert_eq!(row(&c, 82)[23..], [O(None), O(None)]);
    let oi = c.column("openinterest_usdt").unwrap().as_opt_f64().unwrap();
    assert_eq!(oi.iter().filter(|v| v.is_none()).count(), 31);
}

// ---------------------------------------------------------------------------------------------
// Behaviour on synthetic inputs (written here, not archive files).

fn um_agg() -> ArchiveFile {
    file(Market::Um, DataType::AggTrades, None, "2026-09-15")
}

const UM_AGG_HEADER: &str =
    "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n";
const UM_AGG_ROWS: &str = "1,78153.0,0.001,10,10,1789430400003,false\n\
                           2,78152.9,0.148,11,14,1789430400006,true\n";

#[test]
fn header_detected_both_ways() {
    let (with, s1) = parse(&um_agg(), &format!("{UM_AGG_HEADER}{UM_AGG_ROWS}")).unwrap();
    let (without, s2) = parse(&um_agg(), UM_AGG_ROWS).unwrap();
    assert!(s1.had_header && !s2.had_header);
    assert_eq!(with, without);
    assert_eq!(with.len(), 2);
    // Quoted header names, a BOM and CRLF are still a header.
    let odd = format!(
        "\u{feff}\"agg_trade_id\",price,quantity,first_trade_id,last_trade_id,transact_time,\
         is_buyer_maker\r\n{}",
        UM_AGG_ROWS.replace('\n', "\r\n")
    );
    let (c, s) = parse(&um_agg(), &odd).unwrap();
    assert!(s.had_header);
    assert_eq!(c, with);
}

#[test]
fn crlf_blank_lines_and_missing_final_newline() {
    let (base, _) = parse(&um_agg(), UM_AGG_ROWS).unwrap();
    for text in [
        UM_AGG_ROWS.replace('\n', "\r\n"),
        UM_AGG_ROWS.trim_end().to_string(),
        UM_AGG_ROWS.replace('\n', "\r\n").trim_end().to_string(),
        format!("{UM_AGG_ROWS}\n\n"),
        format!("{}\r\n\r\n", UM_AGG_ROWS.replace('\n', "\r\n")),
        format!("\n{UM_AGG_ROWS}"),
    ] {
        for chunks in [&[][..], &[1], &[3, 7, 2]] {
            let (c, _) = parse_with(&um_agg(), text.as_bytes(), chunks).unwrap();
            assert_eq!(c, base, "{text:?} in chunks {chunks:?}");
        }
    }
    // Empty input, header only.
    assert_eq!(parse(&um_agg(), "").unwrap().0.len(), 0);
    let (c, s) = parse(&um_agg(), UM_AGG_HEADER).unwrap();
    assert_eq!((c.len(), s.had_header), (0, true));
}

#[test]
fn chunk_boundaries_anywhere() {
    let text = format!("{UM_AGG_HEADER}{UM_AGG_ROWS}{UM_AGG_ROWS}");
    let (whole, _) = parse(&um_agg(), &text).unwrap();
    for split in 0..=text.len() {
        let f = um_agg();
        let format = format_of(&f.dataset);
        let mut out = Columns::new(format);
        let mut p = Parser::new(format, "test.csv", &f);
        p.feed(&text.as_bytes()[..split], &mut out).unwrap();
        p.feed(&text.as_bytes()[split..], &mut out).unwrap();
        p.finish(&mut out).unwrap();
        assert_eq!(out, whole, "split at {split}");
    }
}

#[test]
fn booleans_any_case() {
    let text = "1,1.0,1.0,1,1,1789430400003,True\n2,1.0,1.0,2,2,1789430400003,true\n\
                3,1.0,1.0,3,3,1789430400003,TRUE\n4,1.0,1.0,4,4,1789430400003,False\n\
                5,1.0,1.0,5,5,1789430400003,fAlSe\n";
    let (c, _) = parse(&um_agg(), text).unwrap();
    assert_eq!(
        c.column("is_buyer_maker").unwrap().as_bool().unwrap(),
        &[true, true, true, false, false]
    );
}

#[test]
fn exponent_and_integer_decimals() {
    let text = "1,0E-8,10000,1,1,1789430400003,true\n2,1.7E-7,-1E-8,2,2,1789430400003,true\n";
    let (c, _) = parse(&um_agg(), text).unwrap();
    assert_eq!(c.column("price").unwrap().as_f64().unwrap(), &[0.0, 1.7e-7]);
    assert_eq!(
        c.column("quantity").unwrap().as_f64().unwrap(),
        &[10000.0, -1e-8]
    );
}

#[test]
fn time_units_detected_per_column_and_normalized() {
    let f = file(Market::Um, DataType::BookTicker, None, "2024-01-15");
    let h = "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,\
             event_time\n";
    for (t, unit) in [
        ("1705276800", TimeUnit::Seconds),
        ("1705276800014", TimeUnit::Millis),
        ("1705276800014123", TimeUnit::Micros),
        ("1705276800014123456", TimeUnit::Nanos),
    ] {
        // event_time stays in ms: units are per column.
        let text = format!("{h}1,1,1,1,1,{t},1705276800018\n2,1,1,1,1,{t},1705276800019\n");
        let (c, s) = parse(&f, &text).unwrap();
        assert_eq!(
            s.time_units,
            vec![("transaction_time", unit), ("event_time", TimeUnit::Millis)]
        );
        let expected = match unit {
            TimeUnit::Seconds => 1_705_276_800_000_000,
            TimeUnit::Millis => 1_705_276_800_014_000,
            _ => 1_705_276_800_014_123,
        };
        let tt = c.column("transaction_time").unwrap().as_i64().unwrap();
        assert_eq!(tt, &[expected, expected]);
        let et = c.column("event_time").unwrap().as_i64().unwrap();
        assert_eq!(et, &[1_705_276_800_018_000, 1_705_276_800_019_000]);
    }
}

#[test]
fn time_unit_change_mid_file_is_an_error() {
    let text = format!(
        "{UM_AGG_HEADER}1,1.0,1.0,1,1,1789430400003,true\n2,1.0,1.0,2,2,1789430400003000,true\n"
    );
    let (line, column, reason) = schema_err(parse(&um_agg(), &text));
    assert_eq!((line, column.as_str()), (3, "transact_time"));
    assert!(
        reason.contains("16 digits") && reason.contains("ms"),
        "{reason}"
    );
    // A first value of no known width.
    let (line, column, reason) = schema_err(parse(&um_agg(), "1,1.0,1.0,1,1,17894304000,true\n"));
    assert_eq!((line, column.as_str()), (1, "transact_time"));
    assert!(reason.contains("11 digits"), "{reason}");
}

#[test]
fn malformed_rows_name_path_line_and_column() {
    let good = "1,78153.0,0.001,10,10,1789430400003,false\n";
    let cases = [
        (
            "1,78153.0,0.001,10,10,1789430400003\n",
            "is_buyer_maker",
            "expected 7 columns, found 6",
        ),
        (
            "1,78153.0,0.001,10,10,1789430400003,false,x\n",
            "is_buyer_maker",
            "found 8",
        ),
        (
            "1,78153.0x,0.001,10,10,1789430400003,false\n",
            "price",
            "\"78153.0x\"",
        ),
        (
            "1,,0.001,10,10,1789430400003,false\n",
            "price",
            "cannot parse \"\"",
        ),
        (
            "1,78153.0,abc,10,10,1789430400003,false\n",
            "quantity",
            "\"abc\"",
        ),
        (
            "1.5,78153.0,0.001,10,10,1789430400003,false\n",
            "agg_trade_id",
            "\"1.5\"",
        ),
        (
            "1,78153.0,0.001,10,10,1789430400003,yes\n",
            "is_buyer_maker",
            "\"yes\"",
        ),
        (
            "1,78153.0,0.001,10,10,1789430400003,falsey\n",
            "is_buyer_maker",
            "\"falsey\"",
        ),
        (
            "1,78153.0,0.001,99999999999999999999,10,1789430400003,false\n",
            "first_trade_id",
            "integer",
        ),
    ];
    for (bad, col, needle) in cases {
        let text = format!("{UM_AGG_HEADER}{good}{bad}{good}");
        let r = parse(&um_agg(), &text);
        let msg = r.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
        let (line, column, reason) = schema_err(r);
        assert_eq!((line, column.as_str()), (3, col), "{bad}");
        assert!(reason.contains(needle), "{bad}: {reason}");
        assert!(
            msg.starts_with(&format!("test.csv:3: column {col}: ")),
            "{msg}"
        );
    }
    // A long cell is quoted truncated.
    let long = format!(
        "1,{},0.001,10,10,1789430400003,false\n",
        "9".repeat(30) + &"x".repeat(50)
    );
    let (_, _, reason) = schema_err(parse(&um_agg(), &long));
    assert!(reason.contains('…') && reason.len() < 120, "{reason}");
    // Bad datetime in metrics, with the line counted across a CRLF header.
    let f = file(Market::Um, DataType::Metrics, None, "2026-09-15");
    let text = "create_time,symbol,sum_open_interest,sum_open_interest_value,\
                count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,\
                count_long_short_ratio,sum_taker_long_short_vol_ratio\r\n\
                2026-09-15 00:00:00,BTCUSDT,1,2,3,4,5,6\r\n\
                2026-09-15T00:05:00,BTCUSDT,1,2,3,4,5,6\r\n";
    let (line, column, reason) = schema_err(parse(&f, text));
    assert_eq!((line, column.as_str()), (3, "create_time"));
    assert!(reason.contains("2026-09-15T00:05:00"), "{reason}");
}

#[test]
fn error_leaves_only_whole_rows() {
    let f = um_agg();
    let format = format_of(&f.dataset);
    let mut out = Columns::new(format);
    let mut p = Parser::new(format, "test.csv", &f);
    let text = format!("{UM_AGG_ROWS}3,1.0,1.0,3,3,1789430400003,maybe\n");
    assert!(p.feed(text.as_bytes(), &mut out).is_err());
    assert_eq!(out.len(), 2);
    for (_, col) in out.into_parts() {
        assert_eq!(col.len(), 2);
    }
}

#[test]
fn invalidated_spot_agg_trades_are_dropped_and_counted() {
    let f = file(Market::Spot, DataType::AggTrades, None, "2021-12-01");
    let text = "10,48000.00000000,0.10000000,100,101,1638316800000,True,True\n\
                11,0.00000000,0.00000000,-1,-1,1638316800001,True,True\n\
                12,0,0,-1,-1,1638316800002,False,True\n\
                13,48001.00000000,0.20000000,102,102,1638316800003,False,True\n\
                14,0.00000000,0.00000000,103,103,1638316800004,False,True\n";
    let (c, s) = parse(&f, text).unwrap();
    assert_eq!((s.rows, s.dropped_invalid), (3, 2));
    assert_eq!(
        c.column("agg_trade_id").unwrap().as_i64().unwrap(),
        &[10, 13, 14]
    );
    assert_eq!(
        c.column("first_trade_id").unwrap().as_i64().unwrap(),
        &[100, 102, 103]
    );
}

const METRICS_HEADER: &str = "create_time,symbol,sum_open_interest,sum_open_interest_value,\
     count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,count_long_short_ratio,\
     sum_taker_long_short_vol_ratio\n";

fn snapshot_offset(market: Market, date: &str) -> i64 {
    let f = file(market, DataType::Metrics, None, date);
    let text = format!("{METRICS_HEADER}2026-06-24 00:05:00,BTCUSDT,1,2,3,4,5,6\n");
    let (c, _) = parse(&f, &text).unwrap();
    let create = c.column("create_time").unwrap().as_i64().unwrap()[0];
    assert_eq!(create, 1_782_259_500_000_000);
    c.column("snapshot_time").unwrap().as_i64().unwrap()[0] - create
}

#[test]
fn metrics_snapshot_time_follows_the_file_date() {
    const FIVE_MIN: i64 = 300_000_000;
    // UM up to 2026-06-24: end-labelled. The row's own date does not matter.
    assert_eq!(snapshot_offset(Market::Um, "2026-06-24"), 0);
    assert_eq!(snapshot_offset(Market::Um, "2021-12-01"), 0);
    // UM from 2026-06-25: start-labelled.
    assert_eq!(snapshot_offset(Market::Um, "2026-06-25"), FIVE_MIN);
    assert_eq!(snapshot_offset(Market::Um, "2026-09-15"), FIVE_MIN);
    // CM: always start-labelled.
    assert_eq!(snapshot_offset(Market::Cm, "2024-01-01"), FIVE_MIN);
    assert_eq!(snapshot_offset(Market::Cm, "2026-09-15"), FIVE_MIN);
}

#[test]
fn blank_ratio_cells_are_null_never_zero() {
    // CM writes `""` in the ratio columns; bbgo saw bare blanks too.
    let f = ArchiveFile::new(
        Dataset::new(Market::Cm, DataType::Metrics, None).unwrap(),
        "BTCUSD_PERP",
        "2024-01-01".parse::<FileDate>().unwrap(),
    );
    let text = format!(
        "{METRICS_HEADER}2024-01-01 00:00:00,BTCUSD_PERP,5578700,18265.1,\"\",\"\",\"\",1.5\n\
         2024-01-01 00:05:00,BTCUSD_PERP,5578701,18265.2,,,,\n\
         2024-01-01 00:10:00,BTCUSD_PERP,5578702,18265.3,0E-8,0,2.5,\"\""
    );
    let (c, _) = parse(&f, &text).unwrap();
    let col = |n| c.column(n).unwrap().as_opt_f64().unwrap().to_vec();
    assert_eq!(
        col("count_toptrader_long_short_ratio"),
        vec![None, None, Some(0.0)]
    );
    assert_eq!(col("count_long_short_ratio"), vec![None, None, Some(2.5)]);
    assert_eq!(
        col("sum_taker_long_short_vol_ratio"),
        vec![Some(1.5), None, None]
    );
    // The file's symbol is checked and left to the folder `symbol=`, not repeated as a column.
    assert!(c.column("symbol").is_none());
    // A non-blank garbage cell is still an error.
    let bad = format!("{METRICS_HEADER}2024-01-01 00:00:00,BTCUSD_PERP,1,2,\"x\",,,\n");
    let (line, column, _) = schema_err(parse(&f, &bad));
    assert_eq!(
        (line, column.as_str()),
        (2, "count_toptrader_long_short_ratio")
    );
}

#[test]
fn header_columns_are_mapped_by_name() {
    let reordered = "is_buyer_maker,transact_time,last_trade_id,first_trade_id,quantity,price,\
                     agg_trade_id\n\
                     false,1789430400003,10,10,0.001,78153.0,1\n\
                     true,1789430400006,14,11,0.148,78152.9,2\n";
    let (c, _) = parse(&um_agg(), reordered).unwrap();
    let (base, _) = parse(&um_agg(), UM_AGG_ROWS).unwrap();
    assert_eq!(c, base);
    // Spot trades with a header (never seen, but mapped by name): isBestMatch optional.
    let f = file(Market::Spot, DataType::Trades, None, "2026-09-15");
    let (c, _) = parse(
        &f,
        "time,id,price,qty,quoteQty,isBuyerMaker\n1789430400017025,5,2.0,3.0,6.0,True\n",
    )
    .unwrap();
    assert_eq!(
        row(&c, 0),
        vec![
            I(5),
            F(2.0),
            F(3.0),
            F(6.0),
            T(1_789_430_400_017_025),
            B(true)
        ]
    );
}

#[test]
fn unknown_missing_and_duplicate_header_columns_are_errors() {
    let unknown = UM_AGG_HEADER.replace("\n", ",mystery,other\n");
    let (line, column, reason) = schema_err(parse(&um_agg(), &unknown));
    assert_eq!((line, column.as_str()), (1, "mystery,other"));
    assert!(reason.contains("unknown header"), "{reason}");
    let missing = "agg_trade_id,price,quantity,first_trade_id,transact_time,is_buyer_maker\n";
    let (line, column, reason) = schema_err(parse(&um_agg(), missing));
    assert_eq!((line, column.as_str()), (1, "last_trade_id"));
    assert!(reason.contains("lacks"), "{reason}");
    let dup = UM_AGG_HEADER.replace("\n", ",price\n");
    let (_, column, reason) = schema_err(parse(&um_agg(), &dup));
    assert_eq!(column, "price");
    assert!(reason.contains("twice"), "{reason}");
    // Kline headers are positional: any spelling, but the right count.
    let f = file(
        Market::Um,
        DataType::MarkPriceKlines,
        Some(Interval::H1),
        "2024-01-01",
    );
    let mark = "open_time,open,high,low,close,ignore,close_time,ignore,ignore,ignore,ignore,\
                ignore\n1704067200000,42314.1,42400,42300,42350.5,0,1704070799999,0,3600,0,0,0\n";
    let (c, s) = parse(&f, mark).unwrap();
    assert!(s.had_header);
    assert_eq!(c.column("trades").unwrap().as_i64().unwrap(), &[3600]);
    assert_eq!(c.column("close").unwrap().as_f64().unwrap(), &[42350.5]);
    let short = "open_time,open,high,low,close\n";
    let (line, column, _) = schema_err(parse(&f, short));
    assert_eq!((line, column.as_str()), (1, "header"));
}

#[test]
fn other_formats_parse_synthetic_rows() {
    // liquidationSnapshot (binance-archive.md §3.9): every row twice in the archive.
    let f = file(
        Market::Cm,
        DataType::LiquidationSnapshot,
        None,
        "2023-06-25",
    );
    let text = "time,side,order_type,time_in_force,original_quantity,price,average_price,\
                order_status,last_fill_quantity,accumulated_fill_quantity\n\
                1687651200123,SELL,LIMIT,IOC,10,30000.1,30010.5,FILLED,10,10\n\
                1687651200123,SELL,LIMIT,IOC,10,30000.1,30010.5,FILLED,10,10\n";
    let (c, _) = parse(&f, text).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(
        row(&c, 1),
        vec![
            T(1_687_651_200_123_000),
            S("SELL"),
            S("LIMIT"),
            S("IOC"),
            F(10.0),
            F(30000.1),
            F(30010.5),
            S("FILLED"),
            F(10.0),
            F(10.0),
        ]
    );
    // BVOLIndex (§3.10): the row quoted in the spec.
    let f = ArchiveFile::new(
        Dataset::new(Market::Option, DataType::BvolIndex, None).unwrap(),
        "BTCBVOLUSDT",
        "2026-08-08".parse::<FileDate>().unwrap(),
    );
    let text = "calc_time,symbol,base_asset,quote_asset,index_value\n\
                1786147200000,BTCBVOLUSDT,BTCBVOL,USDT,35.7571\n";
    let (c, _) = parse(&f, text).unwrap();
    assert_eq!(
        row(&c, 0),
        vec![
            T(1_786_147_200_000_000),
            S("BTCBVOL"),
            S("USDT"),
            F(35.7571)
        ]
    );
    // A row naming another symbol than the file's path is refused, naming both.
    let other = "calc_time,symbol,base_asset,quote_asset,index_value\n\
                 1786147200000,ETHBVOLUSDT,ETHBVOL,USDT,35.7571\n";
    let (line, column, reason) = schema_err(parse(&f, other));
    assert_eq!((line, column.as_str()), (2, "symbol"));
    assert!(
        reason.contains("ETHBVOLUSDT") && reason.contains("BTCBVOLUSDT"),
        "{reason}"
    );
    // CM trades: the 4th column is base_qty.
    let f = file(Market::Cm, DataType::Trades, None, "2024-01-01");
    let (c, _) = parse(
        &f,
        "id,price,qty,base_qty,time,is_buyer_maker\n7,42000.1,3,0.00714284,1704067200000,true\n",
    )
    .unwrap();
    assert_eq!(
        c.column("base_qty").unwrap().as_f64().unwrap(),
        &[0.00714284]
    );
}

#[test]
fn columns_take_rows_clear_into_parts() {
    let (c, _) = parse(&um_agg(), &format!("{UM_AGG_ROWS}{UM_AGG_ROWS}")).unwrap();
    let mut c2 = c.clone();
    let picked = c2.take_rows(&[3, 0, 0]);
    assert_eq!(picked.len(), 3);
    assert_eq!(row(&picked, 0), row(&c, 3));
    assert_eq!(row(&picked, 1), row(&c, 0));
    assert_eq!(row(&picked, 2), row(&c, 0));
    assert_eq!(c2, c, "take_rows gathers without changing the source");
    c2.clear();
    assert!(c2.is_empty());
    assert_eq!(c2, Columns::new(format_of(&um_agg().dataset)));
    let parts = c.into_parts();
    let names: Vec<_> = parts.iter().map(|(n, _)| *n).collect();
    assert_eq!(names[0], "agg_trade_id");
    assert!(parts.iter().all(|(_, d)| d.len() == 4));
    assert_eq!(parts[6].1.kind(), OutKind::Bool);
}

#[test]
fn columns_extend_from_appends_a_row_range() {
    let (c, _) = parse(&um_agg(), &format!("{UM_AGG_ROWS}{UM_AGG_ROWS}")).unwrap();
    let mut acc = Columns::new(format_of(&um_agg().dataset));
    acc.extend_from(&c, 1..3);
    acc.extend_from(&c, 0..1);
    acc.extend_from(&c, 2..2);
    assert_eq!(acc.len(), 3);
    assert_eq!(row(&acc, 0), row(&c, 1));
    assert_eq!(row(&acc, 1), row(&c, 2));
    assert_eq!(row(&acc, 2), row(&c, 0));
}
