//! Between Polars frames and the plain columns of the panel core: `aggregate`'s hourly feature
//! files and optimized fundingRate files in, the panel out (one frame per chunk of rows, so the
//! Parquet writer never holds the whole panel as a frame).

use frames::polars::prelude::*;
use shared::{Error, Result};

use crate::panel::{COLUMNS, CS_FACTORS, Col, Factors, Kind, Panel, Series, TS_FACTORS};
use crate::universe::FundingRecords;

fn col<'a>(df: &'a DataFrame, name: &str, what: &str) -> Result<&'a Column> {
    df.column(name)
        .map_err(|_| Error::bad_data(what, format!("no column `{name}`")))
}

fn opt_i64s(df: &DataFrame, name: &str, what: &str) -> Result<Vec<Option<i64>>> {
    let c = col(df, name, what)?
        .cast(&DataType::Int64)
        .map_err(|e| Error::bad_data(what, format!("`{name}`: {e}")))?;
    let ca = c
        .i64()
        .map_err(|e| Error::bad_data(what, format!("`{name}`: {e}")))?;
    Ok(ca.iter().collect())
}

fn opt_f64s(df: &DataFrame, name: &str, what: &str) -> Result<Vec<Option<f64>>> {
    let c = col(df, name, what)?
        .cast(&DataType::Float64)
        .map_err(|e| Error::bad_data(what, format!("`{name}`: {e}")))?;
    let ca = c
        .f64()
        .map_err(|e| Error::bad_data(what, format!("`{name}`: {e}")))?;
    // NaN is not a value of this pipeline: treat one as null rather than let it spread.
    Ok(ca.iter().map(|x| x.filter(|v| !v.is_nan())).collect())
}

fn no_nulls<T>(v: Vec<Option<T>>, name: &str, what: &str) -> Result<Vec<T>> {
    v.into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::bad_data(what, format!("null in `{name}`")))
}

/// The columns read from a feature file: `open_time` and [`COLUMNS`].
pub fn feature_columns() -> Vec<&'static str> {
    std::iter::once("open_time")
        .chain(COLUMNS.iter().map(|(n, _, _)| *n))
        .collect()
}

/// Append the rows of one feature file (`aggregate`'s output) to `s`.
pub fn push_features(s: &mut Series, df: &DataFrame, what: &str) -> Result<()> {
    let t = no_nulls(opt_i64s(df, "open_time", what)?, "open_time", what)?;
    s.filled.extend(std::iter::repeat_n(false, t.len()));
    s.open_time.extend(t);
    for (c, (name, kind, _)) in s.cols.iter_mut().zip(COLUMNS) {
        match (c, kind) {
            (Col::F(v), Kind::F64) => v.extend(opt_f64s(df, name, what)?),
            (Col::I(v), Kind::I64) => v.extend(opt_i64s(df, name, what)?),
            _ => unreachable!("Series::new makes the kinds of COLUMNS"),
        }
    }
    Ok(())
}

/// The columns read from an optimized fundingRate file.
pub const FUNDING_COLUMNS: [&str; 2] = ["calc_time", "last_funding_rate"];

/// Append an optimized fundingRate frame to `f`.
pub fn push_funding(f: &mut FundingRecords, df: &DataFrame, what: &str) -> Result<()> {
    f.calc_time.extend(no_nulls(
        opt_i64s(df, "calc_time", what)?,
        "calc_time",
        what,
    )?);
    f.rate.extend(no_nulls(
        opt_f64s(df, "last_funding_rate", what)?,
        "last_funding_rate",
        what,
    )?);
    Ok(())
}

/// Every output column name, in order.
pub fn panel_columns() -> Vec<&'static str> {
    let mut v = vec!["symbol", "open_time"];
    v.extend(COLUMNS.iter().map(|(n, _, _)| *n));
    v.push("filled");
    v.extend(TS_FACTORS);
    v.extend(CS_FACTORS);
    v
}

/// Rows `range` of the panel as a frame: `symbol` String, `open_time` UTC µs, the §1 columns
/// (Float64, counts Int64), `filled` Boolean, the factors Float64 (nullable).
pub fn panel_frame(
    panel: &Panel,
    series: &[Series],
    factors: &[Factors],
    range: std::ops::Range<usize>,
) -> Result<DataFrame> {
    let rows = &panel.rows[range.clone()];
    let names = panel_columns();
    let mut cols: Vec<Column> = Vec::with_capacity(names.len());
    let mut k = 0;
    let mut name = || {
        k += 1;
        PlSmallStr::from(names[k - 1])
    };
    let sym: Vec<&str> = rows
        .iter()
        .map(|(s, _)| series[*s as usize].symbol.as_str())
        .collect();
    cols.push(Column::new(name(), sym));
    let t: Vec<i64> = rows
        .iter()
        .map(|(s, r)| series[*s as usize].open_time[*r as usize])
        .collect();
    cols.push(
        Int64Chunked::from_vec(name(), t)
            .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
            .into_column(),
    );
    for (c, (_, kind, _)) in COLUMNS.iter().enumerate() {
        let n = name();
        cols.push(match &series.first().map(|s| &s.cols[c]) {
            Some(Col::I(_)) => {
                let v: Vec<Option<i64>> = rows
                    .iter()
                    .map(|(s, r)| match &series[*s as usize].cols[c] {
                        Col::I(v) => v[*r as usize],
                        Col::F(_) => unreachable!("kinds checked"),
                    })
                    .collect();
                Column::new(n, v)
            }
            Some(Col::F(_)) => {
                let v: Vec<Option<f64>> = rows
                    .iter()
                    .map(|(s, r)| series[*s as usize].f(c)[*r as usize])
                    .collect();
                Column::new(n, v)
            }
            None => match kind {
                Kind::F64 => Column::new(n, Vec::<Option<f64>>::new()),
                Kind::I64 => Column::new(n, Vec::<Option<i64>>::new()),
            },
        });
    }
    let filled: Vec<bool> = rows
        .iter()
        .map(|(s, r)| series[*s as usize].filled[*r as usize])
        .collect();
    cols.push(Column::new(name(), filled));
    for (f, _) in TS_FACTORS.iter().enumerate() {
        let v: Vec<Option<f64>> = rows
            .iter()
            .map(|(s, r)| factors[*s as usize][f][*r as usize])
            .collect();
        cols.push(Column::new(name(), v));
    }
    cols.push(Column::new(name(), &panel.funding_pressure[range.clone()]));
    cols.push(Column::new(name(), &panel.relative_volume[range]));
    DataFrame::new(rows.len(), cols)
        .map_err(|e| Error::internal(format!("assembling the panel: {e}")))
}
