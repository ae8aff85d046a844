//! Reading an optimized month one row group at a time, and turning a DataFrame into the plain
//! column vectors the checks loop over. A month of aggTrades can be far larger than memory, so
//! nothing here reads a whole file; row groups are `optimize`'s scan-sized ones.

use std::path::Path;

use frames::PolarsContext;
use frames::polars::prelude::*;
use shared::formats::{Format, OutKind};
use shared::{Error, Result};

/// Call `f` with each row group of a local Parquet file, in order.
pub fn for_each_row_group(
    file: &Path,
    name: &str,
    mut f: impl FnMut(DataFrame) -> Result<()>,
) -> Result<()> {
    let pf = frames::file::ParquetFile::open(file, name)?;
    for rg in 0..pf.num_row_groups() {
        f(pf.read_frame(rg)?)?;
    }
    Ok(())
}

/// The Polars type of a normalized column.
fn dtype_of(kind: OutKind) -> DataType {
    match kind {
        OutKind::I64 => DataType::Int64,
        OutKind::F64 | OutKind::OptF64 => DataType::Float64,
        OutKind::Bool => DataType::Boolean,
        OutKind::Str => DataType::String,
        OutKind::TimeUs => frames::time_dtype(),
    }
}

/// How a frame's schema differs from the format's normalized schema; `None` when it matches.
pub fn schema_mismatch(df: &DataFrame, format: &Format) -> Option<String> {
    let want = format.output_fields();
    let got = df.schema();
    let mut problems = Vec::new();
    for (name, kind) in &want {
        match got.get(name) {
            None => problems.push(format!("column {name} missing")),
            Some(t) if *t != dtype_of(*kind) => problems.push(format!(
                "column {name} is {t}, expected {}",
                dtype_of(*kind)
            )),
            Some(_) => {}
        }
    }
    for (name, _) in got.iter() {
        if !want.iter().any(|(w, _)| w == name) {
            problems.push(format!("unexpected column {name}"));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// An integer or timestamp column as i64 (timestamps in µs); a null reads as `i64::MIN`, which
/// the order checks then report.
pub fn i64s(df: &DataFrame, name: &str) -> Result<Vec<i64>> {
    let c = df
        .column(name)
        .ctx(|| format!("column {name}"))
        .map_err(Error::from)?
        .cast(&DataType::Int64)
        .ctx(|| format!("column {name} as Int64"))
        .map_err(Error::from)?;
    let ca = c
        .i64()
        .ctx(|| format!("column {name}"))
        .map_err(Error::from)?;
    Ok(values(ca, i64::MIN))
}

/// A column's values, `null` where it has none: copied chunk by chunk when it has no nulls (the
/// usual case; an iterator over options costs more than the checks of a row).
fn values<T>(ca: &ChunkedArray<T>, null: T::Native) -> Vec<T::Native>
where
    T: PolarsNumericType,
{
    if ca.null_count() == 0 {
        let mut out = Vec::with_capacity(ca.len());
        for a in ca.downcast_iter() {
            out.extend_from_slice(a.values());
        }
        return out;
    }
    ca.iter().map(|v| v.unwrap_or(null)).collect()
}

/// A float column; a null reads as NaN, which every comparison check then reports.
pub fn f64s(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let c = df
        .column(name)
        .ctx(|| format!("column {name}"))
        .map_err(Error::from)?;
    let ca = c
        .f64()
        .ctx(|| format!("column {name}"))
        .map_err(Error::from)?;
    Ok(values(ca, f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::formats::format_of;
    use shared::paths::{DataType as Dt, Dataset, Market};

    #[test]
    fn columns_read_with_nulls_marked_and_across_chunks() {
        let mut a = DataFrame::new(
            2,
            vec![
                Column::new("t".into(), vec![Some(1i64), None]),
                Column::new("x".into(), vec![None, Some(2.5f64)]),
            ],
        )
        .unwrap();
        assert_eq!(i64s(&a, "t").unwrap(), vec![1, i64::MIN]);
        let x = f64s(&a, "x").unwrap();
        assert!(x[0].is_nan() && x[1] == 2.5);
        // Without nulls, every chunk in order.
        let b = DataFrame::new(
            1,
            vec![
                Column::new("t".into(), vec![Some(3i64)]),
                Column::new("x".into(), vec![Some(4.0f64)]),
            ],
        )
        .unwrap();
        let mut c = b.clone();
        c.vstack_mut(&b).unwrap();
        assert_eq!(c.column("t").unwrap().i64().unwrap().chunks().len(), 2);
        assert_eq!(i64s(&c, "t").unwrap(), vec![3, 3]);
        assert_eq!(f64s(&c, "x").unwrap(), vec![4.0, 4.0]);
        a.vstack_mut(&c).unwrap();
        assert_eq!(i64s(&a, "t").unwrap(), vec![1, i64::MIN, 3, 3]);
    }

    #[test]
    fn row_groups_are_read_in_order_and_schemas_compared() {
        let ds = Dataset::new(Market::Um, Dt::FundingRate, None).unwrap();
        let t: Vec<i64> = (0..10).map(|i| i * 1_000_000).collect();
        let mut df = DataFrame::new(
            10,
            vec![
                Int64Chunked::from_vec("calc_time".into(), t)
                    .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
                    .into_column(),
                Column::new("funding_interval_hours".into(), vec![8i64; 10]),
                Column::new("last_funding_rate".into(), vec![0.0001f64; 10]),
            ],
        )
        .unwrap();
        assert_eq!(schema_mismatch(&df, format_of(&ds)), None);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.parquet");
        let opts = frames::ParquetOptions {
            row_group_rows: Some(4),
            ..frames::ParquetOptions::default()
        };
        std::fs::write(&p, frames::parquet_bytes(&mut df, &opts).unwrap()).unwrap();
        let mut seen = Vec::new();
        for_each_row_group(&p, "x", |df| {
            seen.extend(i64s(&df, "calc_time")?);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, (0..10).map(|i| i * 1_000_000).collect::<Vec<_>>());

        let wrong = df
            .drop("last_funding_rate")
            .unwrap()
            .with_column(Column::new("extra".into(), vec![1i64; 10]))
            .unwrap()
            .clone();
        let m = schema_mismatch(&wrong, format_of(&ds)).unwrap();
        assert!(m.contains("column last_funding_rate missing"), "{m}");
        assert!(m.contains("unexpected column extra"), "{m}");
    }
}
