//! How a float column's pages are encoded, chosen per row group from its values: dictionary,
//! BYTE_STREAM_SPLIT, or PLAIN compressed with zstd or LZ4; and the byte-stream-split
//! transposition, both ways.
//!
//! Why per row group: market data holds both kinds of doubles. Trade prices on a tick grid and
//! quantities in lots repeat a few thousand values over millions of rows; a dictionary of them
//! plus bit-packed indices is several times smaller than PLAIN and decodes with little zstd work.
//! Sums and products (quote volumes, VWAP inputs) are nearly all distinct, with random low
//! mantissa bytes; split into byte streams, the sign/exponent streams compress to almost nothing
//! and the noisy ones are stored raw, so zstd inflates them at memory speed instead of
//! Huffman-decoding every byte (tests/README.md, "Float encodings"). Distinct decimals (kline
//! prices on a tick, volumes in lots) compress better PLAIN, where zstd finds repeated byte runs;
//! so between the two the smaller on a sample wins.
//!
//! Why LZ4 for PLAIN: those decimals are the one case where zstd is slow to read. Its output for
//! them is a dense string of short matches, which zstd's sequence decoder inflates at ≈ 1.2 GB/s
//! here, against ≈ 4 GB/s for LZ4 on the same bytes and memory speed for split pages (a month of
//! kline prices: 110 kB zstd, 151 kB LZ4 level 3 and ≈ 10% more in its fast mode, 195 kB split;
//! tests/README.md, "Float encodings").
//! Files read far more often than written (`optimize`'s months feed every later job
//! and every study) ask for LZ4 ([`crate::FloatEncoding::ChosenLz4`]): their PLAIN pages are
//! written LZ4_RAW (fast mode: see [`crate::lz4_compress`]) when that costs at most
//! [`LZ4_MAX_GROWTH`] times zstd's bytes on the sample, and zstd otherwise. Every reader used
//! here (Polars, PyArrow, DuckDB) reads LZ4_RAW.

use polars_arrow::array::{Array, DictionaryArray, PrimitiveArray};
use polars_arrow::datatypes::{ArrowDataType, IntegerType};

/// The encoding of one float column chunk.
pub(crate) enum Choice {
    /// A dictionary of the distinct values (bit patterns) and the rows' keys.
    Dictionary(DictionaryArray<u32>),
    /// PLAIN values transposed into 8 byte streams.
    Split,
    /// PLAIN values, zstd-compressed like every other page.
    Plain,
    /// PLAIN values, compressed LZ4_RAW.
    PlainLz4,
}

/// Most distinct values a dictionary holds (its page is then at most 512 KiB).
const DICT_MAX: usize = 1 << 16;
/// Values compressed both ways to choose between BYTE_STREAM_SPLIT and PLAIN: an eighth of the
/// column, within these bounds (a trial on a small column cost more than compressing it).
const SAMPLE: (usize, usize) = (1024, 4096);
/// The trial's zstd level: fast, and it ranks the two layouts as the page's level does.
const TRIAL_LEVEL: i32 = 1;
/// How many times zstd's bytes (on the sample) a PLAIN page may take to be written LZ4 instead:
/// reading decimals 3× faster is worth a third more bytes, not twice as many (where zstd's
/// entropy coding does most of the work, LZ4 loses far more than that and zstd stays).
const LZ4_MAX_GROWTH: f64 = 1.5;

/// Choose how to encode `array`; `lz4`: whether PLAIN pages may be LZ4
/// ([`crate::FloatEncoding::ChosenLz4`]).
pub(crate) fn choose(array: &PrimitiveArray<f64>, lz4: bool) -> Choice {
    let present = array.len() - array.null_count();
    if present == 0 {
        return Choice::Plain;
    }
    // A dictionary pays when values repeat at least 4 times on average.
    if let Some(d) = dictionary(array, (present / 4).min(DICT_MAX)) {
        return Choice::Dictionary(d);
    }
    match trial(array, lz4) {
        Some(t) => t.pick(),
        None => Choice::Plain,
    }
}

/// The dictionary form of `array`, if it has at most `limit` distinct values (by bit pattern, so
/// -0.0, 0.0 and NaN payloads round-trip exactly). Gives up as soon as there are more.
fn dictionary(array: &PrimitiveArray<f64>, limit: usize) -> Option<DictionaryArray<u32>> {
    if limit == 0 {
        return None;
    }
    let bits = (2 * limit).next_power_of_two().max(256).trailing_zeros();
    let mask = (1usize << bits) - 1;
    // Open addressing: slot → 1 + index into `uniq`, 0 when empty.
    let mut slots = vec![0u32; 1 << bits];
    let mut uniq: Vec<u64> = Vec::new();
    let mut keys: Vec<u32> = Vec::with_capacity(array.len());
    let valid = array.validity();
    for (i, v) in array.values().iter().enumerate() {
        if valid.is_some_and(|b| !b.get_bit(i)) {
            keys.push(0);
            continue;
        }
        let b = v.to_bits();
        let mut s = (b.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize;
        let key = loop {
            match slots[s] {
                0 => {
                    if uniq.len() == limit {
                        return None;
                    }
                    uniq.push(b);
                    slots[s] = uniq.len() as u32;
                    break uniq.len() as u32 - 1;
                }
                k if uniq[k as usize - 1] == b => break k - 1,
                _ => s = (s + 1) & mask,
            }
        };
        keys.push(key);
    }
    let values: Vec<f64> = uniq.into_iter().map(f64::from_bits).collect();
    let keys = PrimitiveArray::<u32>::new(ArrowDataType::UInt32, keys.into(), valid.cloned());
    let values = PrimitiveArray::<f64>::from_vec(values).boxed();
    DictionaryArray::try_new(
        ArrowDataType::Dictionary(IntegerType::UInt32, Box::new(ArrowDataType::Float64), false),
        keys,
        values,
    )
    .ok()
}

/// Compressed sizes of the trial sample, each way it can be written.
#[derive(Debug, Clone, Copy)]
struct Trial {
    /// BYTE_STREAM_SPLIT, zstd.
    split: usize,
    /// PLAIN, zstd.
    plain: usize,
    /// PLAIN, LZ4; measured only when PLAIN beats split.
    lz4: Option<usize>,
}

impl Trial {
    /// Split when it compresses smaller (its pages inflate at memory speed); else PLAIN, LZ4 when
    /// it costs at most [`LZ4_MAX_GROWTH`] times zstd's bytes.
    fn pick(self) -> Choice {
        if self.split < self.plain {
            Choice::Split
        } else if self
            .lz4
            .is_some_and(|l| l as f64 <= self.plain as f64 * LZ4_MAX_GROWTH)
        {
            Choice::PlainLz4
        } else {
            Choice::Plain
        }
    }
}

/// A sample from the middle of `array` compressed each way ([`Trial`]), LZ4 only if `lz4`; `None`
/// if a compressor failed. The sample holds the window's present values only: what a null slot
/// holds is not written, and must not sway the choice.
fn trial(array: &PrimitiveArray<f64>, lz4: bool) -> Option<Trial> {
    let values = array.values().as_slice();
    let n = values
        .len()
        .min((values.len() / 8).clamp(SAMPLE.0, SAMPLE.1));
    let start = (values.len() - n) / 2;
    let window = &values[start..start + n];
    let present: Vec<f64>;
    let window = match array.validity().filter(|_| array.null_count() > 0) {
        Some(v) => {
            present = (start..start + n)
                .filter(|&i| v.get_bit(i))
                .map(|i| values[i])
                .collect();
            &present[..]
        }
        None => window,
    };
    let plain: &[u8] = bytemuck::cast_slice::<f64, u8>(window);
    let mut split = vec![0u8; plain.len()];
    split_bytes(plain, &mut split);
    // This thread's context for the trial level (a fresh one per column costs more than
    // compressing a small column).
    let size = |b: &[u8]| crate::zstd_compress(TRIAL_LEVEL, b).map(|c| c.len()).ok();
    let (split, plain_size) = (size(&split)?, size(plain)?);
    let lz4 = if lz4 && plain_size <= split {
        Some(crate::lz4_compress(plain).ok()?.len())
    } else {
        None
    };
    Some(Trial {
        split,
        plain: plain_size,
        lz4,
    })
}

/// Whether the trial sample compresses smaller split into byte streams.
#[cfg(test)]
fn split_is_smaller(array: &PrimitiveArray<f64>) -> bool {
    trial(array, false).is_some_and(|t| t.split < t.plain)
}

/// Transpose an 8×8 byte matrix held as 8 little-endian rows.
#[inline(always)]
fn transpose8(r: [u64; 8]) -> [u64; 8] {
    // Three rounds of swapping 4×4, 2×2 and 1×1 blocks of bytes across the diagonal.
    let mut r = r;
    for (shift, mask) in [
        (32u32, 0x0000_0000_FFFF_FFFFu64),
        (16, 0x0000_FFFF_0000_FFFF),
        (8, 0x00FF_00FF_00FF_00FF),
    ] {
        let step = (shift / 8) as usize;
        let mut i = 0;
        while i < 8 {
            for j in i..i + step {
                let (a, b) = (r[j], r[j + step]);
                // Row j keeps its low blocks and takes row j+step's low blocks as its high ones.
                r[j] = (a & mask) | ((b & mask) << shift);
                r[j + step] = ((a >> shift) & mask) | (b & !mask);
            }
            i += 2 * step;
        }
    }
    r
}

/// PLAIN little-endian 8-byte values → 8 byte streams (stream k holds byte k of every value).
pub(crate) fn split_bytes(plain: &[u8], out: &mut [u8]) {
    let n = plain.len() / 8;
    debug_assert_eq!(out.len(), n * 8);
    let blocks = n / 8;
    for blk in 0..blocks {
        let mut r = [0u64; 8];
        for (j, row) in r.iter_mut().enumerate() {
            let o = (blk * 8 + j) * 8;
            *row = u64::from_le_bytes(plain[o..o + 8].try_into().expect("8 bytes"));
        }
        let t = transpose8(r);
        for (k, row) in t.iter().enumerate() {
            let o = k * n + blk * 8;
            out[o..o + 8].copy_from_slice(&row.to_le_bytes());
        }
    }
    for i in blocks * 8..n {
        for k in 0..8 {
            out[k * n + i] = plain[i * 8 + k];
        }
    }
}

/// 8 byte streams of `n` values each → the values (appended to `out`).
pub(crate) fn join_bytes(streams: &[u8], n: usize, out: &mut Vec<f64>) {
    assert!(
        streams.len() >= n * 8,
        "byte streams shorter than their values"
    );
    out.reserve(n);
    #[cfg(target_arch = "x86_64")]
    let done = {
        let blocks = n / 16;
        let start = out.len();
        // SAFETY: `reserve` made room for `n` values past `start`, of which `16 * blocks` are
        // written here before `set_len`; the loads stay within `k * n + 16 * blocks <= 8 * n`.
        unsafe {
            let dst = out.as_mut_ptr().add(start).cast::<u8>();
            for blk in 0..blocks {
                join16(streams.as_ptr(), n, blk * 16, dst.add(blk * 128));
            }
            out.set_len(start + blocks * 16);
        }
        blocks * 16
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    join_scalar(streams, n, done, out);
}

/// Values `i..i+16` from the 8 streams, interleaved into 128 bytes at `dst` with SSE2 (part of
/// every x86-64): three rounds of unpacking bytes, then 16-bit and 32-bit lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn join16(streams: *const u8, n: usize, i: usize, dst: *mut u8) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): the caller guarantees 16 readable bytes at `k * n + i` for every
    // stream k and 128 writable bytes at `dst`; unaligned loads and stores are used.
    unsafe {
        let s = |k: usize| _mm_loadu_si128(streams.add(k * n + i).cast());
        let (s0, s1, s2, s3, s4, s5, s6, s7) = (s(0), s(1), s(2), s(3), s(4), s(5), s(6), s(7));
        let a0 = _mm_unpacklo_epi8(s0, s1);
        let a1 = _mm_unpackhi_epi8(s0, s1);
        let a2 = _mm_unpacklo_epi8(s2, s3);
        let a3 = _mm_unpackhi_epi8(s2, s3);
        let a4 = _mm_unpacklo_epi8(s4, s5);
        let a5 = _mm_unpackhi_epi8(s4, s5);
        let a6 = _mm_unpacklo_epi8(s6, s7);
        let a7 = _mm_unpackhi_epi8(s6, s7);
        let b0 = _mm_unpacklo_epi16(a0, a2);
        let b1 = _mm_unpackhi_epi16(a0, a2);
        let b2 = _mm_unpacklo_epi16(a1, a3);
        let b3 = _mm_unpackhi_epi16(a1, a3);
        let b4 = _mm_unpacklo_epi16(a4, a6);
        let b5 = _mm_unpackhi_epi16(a4, a6);
        let b6 = _mm_unpacklo_epi16(a5, a7);
        let b7 = _mm_unpackhi_epi16(a5, a7);
        let out = [
            _mm_unpacklo_epi32(b0, b4),
            _mm_unpackhi_epi32(b0, b4),
            _mm_unpacklo_epi32(b1, b5),
            _mm_unpackhi_epi32(b1, b5),
            _mm_unpacklo_epi32(b2, b6),
            _mm_unpackhi_epi32(b2, b6),
            _mm_unpacklo_epi32(b3, b7),
            _mm_unpackhi_epi32(b3, b7),
        ];
        for (j, v) in out.into_iter().enumerate() {
            _mm_storeu_si128(dst.add(16 * j).cast(), v);
        }
    }
}

/// Values `from..n` of the 8 byte streams, appended to `out` (8×8 byte transposes).
fn join_scalar(streams: &[u8], n: usize, from: usize, out: &mut Vec<f64>) {
    let mut i = from;
    while i + 8 <= n {
        let mut r = [0u64; 8];
        for (k, row) in r.iter_mut().enumerate() {
            let o = k * n + i;
            *row = u64::from_le_bytes(streams[o..o + 8].try_into().expect("8 bytes"));
        }
        out.extend(transpose8(r).map(f64::from_bits));
        i += 8;
    }
    for i in i..n {
        let mut b = [0u8; 8];
        for (k, byte) in b.iter_mut().enumerate() {
            *byte = streams[k * n + i];
        }
        out.push(f64::from_le_bytes(b));
    }
}

/// Float columns for the tests of the encoders here and of `direct`'s reader.
#[cfg(test)]
pub(crate) mod samples {
    /// xorshift64, one step.
    pub(crate) fn next(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// `n` kline closes on a 0.01 tick: a random walk from 65,000 in steps of up to ±10, each
    /// the double nearest its decimal (distinct decimals: PLAIN's case).
    pub(crate) fn tick_walk(n: usize, seed: u64) -> Vec<f64> {
        let (mut x, mut p) = (seed | 1, 65_000.0f64);
        (0..n)
            .map(|_| {
                p += ((next(&mut x) >> 40) % 2001) as f64 / 100.0 - 10.0;
                (p * 100.0).round() / 100.0
            })
            .collect()
    }

    /// `n` full-precision doubles in `[base, base + width)`: random mantissas (split's case).
    pub(crate) fn noise(n: usize, seed: u64, base: f64, width: f64) -> Vec<f64> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| base + (next(&mut x) >> 11) as f64 / (1u64 << 53) as f64 * width)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_split(v: &[f64]) -> Vec<u8> {
        let n = v.len();
        let mut out = vec![0u8; n * 8];
        for (i, x) in v.iter().enumerate() {
            for (k, b) in x.to_le_bytes().iter().enumerate() {
                out[k * n + i] = *b;
            }
        }
        out
    }

    #[test]
    fn split_and_join_match_the_definition_and_invert() {
        for n in [0usize, 1, 7, 8, 9, 15, 16, 17, 63, 64, 100, 1001, 4096 + 13] {
            let v: Vec<f64> = (0..n)
                .map(|i| (i as f64 * 1.37 - 40.0).exp() * if i % 3 == 0 { -1.0 } else { 1.0 })
                .chain(std::iter::empty())
                .collect();
            let mut split = vec![0u8; n * 8];
            split_bytes(bytemuck::cast_slice::<f64, u8>(&v), &mut split);
            assert_eq!(split, naive_split(&v), "n={n}");
            let mut back = vec![-1.0];
            join_bytes(&split, n, &mut back);
            assert_eq!(back.len(), n + 1);
            assert!(
                back[1..]
                    .iter()
                    .zip(&v)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            // The portable path alone, too.
            let mut scalar = vec![];
            join_scalar(&split, n, 0, &mut scalar);
            assert!(
                scalar
                    .iter()
                    .zip(&v)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            assert_eq!(scalar.len(), n);
        }
    }

    #[test]
    fn repeated_values_become_a_dictionary_and_keep_their_bits() {
        let v: Vec<f64> = (0..1000)
            .map(|i| match i % 5 {
                0 => 0.0,
                1 => -0.0,
                2 => f64::NAN,
                _ => 42_000.1 + (i % 7) as f64 / 10.0,
            })
            .collect();
        let a = PrimitiveArray::<f64>::from_vec(v.clone());
        let Choice::Dictionary(d) = choose(&a, true) else {
            panic!("expected a dictionary")
        };
        let vals = d
            .values()
            .as_any()
            .downcast_ref::<PrimitiveArray<f64>>()
            .unwrap();
        for (i, x) in v.iter().enumerate() {
            let k = d.keys().value(i) as usize;
            assert_eq!(vals.value(k).to_bits(), x.to_bits(), "row {i}");
        }
        // Nulls keep their validity; a column of distinct values is no dictionary.
        let with_nulls =
            PrimitiveArray::<f64>::from_iter((0..400).map(|i| (i % 4 != 0).then_some(1.5)));
        let Choice::Dictionary(d) = choose(&with_nulls, true) else {
            panic!("expected a dictionary")
        };
        assert_eq!(d.keys().null_count(), 100);
        let distinct = PrimitiveArray::<f64>::from_vec((0..1000).map(|i| i as f64).collect());
        assert!(!matches!(choose(&distinct, true), Choice::Dictionary(_)));
    }

    #[test]
    fn noisy_doubles_split_and_lots_stay_plain() {
        // Full-precision products: the byte streams win.
        let noisy = samples::noise(20_000, 0x1234_5678_9abc_def1, 30_000.0, 100.0);
        let mut x = 0x0bad_5eed_1234_5677u64;
        assert!(split_is_smaller(&PrimitiveArray::from_vec(noisy.clone())));
        // Kline volumes in 0.001 lots, mostly distinct: PLAIN keeps zstd's 8-byte matches.
        let lots: Vec<f64> = (0..20_000)
            .map(|i| {
                let v = ((samples::next(&mut x) >> 40) % 200_000) as f64 / 1000.0 + (i % 2) as f64;
                format!("{v:.3}").parse().unwrap()
            })
            .collect();
        assert!(!split_is_smaller(&PrimitiveArray::from_vec(lots.clone())));
        // Lots with seven slots in eight null, the null slots holding noise (whatever a writer left
        // there): the trial sees only the lots. On every slot, the noise would win.
        let mixed: Vec<f64> = (0..20_000)
            .map(|i| if i % 8 == 0 { lots[i] } else { noisy[i] })
            .collect();
        assert!(split_is_smaller(&PrimitiveArray::from_vec(mixed.clone())));
        let validity: polars_arrow::bitmap::Bitmap = (0..20_000).map(|i| i % 8 == 0).collect();
        let with_nulls =
            PrimitiveArray::<f64>::new(ArrowDataType::Float64, mixed.into(), Some(validity));
        assert!(!split_is_smaller(&with_nulls));
    }

    #[test]
    fn distinct_decimals_go_lz4_when_asked_and_within_its_bound() {
        // Kline closes on a 0.01 tick, a month of a random walk: distinct, and PLAIN beats split.
        let a = PrimitiveArray::from_vec(samples::tick_walk(43_200, 0x2545_f491_4f6c_dd1d));
        let t = trial(&a, true).unwrap();
        assert!(t.plain <= t.split, "{t:?}");
        assert!(
            t.lz4.unwrap() as f64 <= LZ4_MAX_GROWTH * t.plain as f64,
            "{t:?}"
        );
        assert!(matches!(choose(&a, true), Choice::PlainLz4));
        assert!(matches!(choose(&a, false), Choice::Plain));
        assert!(trial(&a, false).unwrap().lz4.is_none());
        // Full-precision noise splits either way, and is never compressed LZ4 on trial.
        let a = PrimitiveArray::from_vec(samples::noise(20_000, 0x5eed, 30_000.0, 100.0));
        assert!(matches!(choose(&a, true), Choice::Split));
        assert!(trial(&a, true).unwrap().lz4.is_none());
        // The rule on its own: split when smaller than PLAIN; LZ4 up to the bound, not past it.
        let pick = |split, plain, lz4| Trial { split, plain, lz4 }.pick();
        assert!(matches!(pick(100, 90, Some(135)), Choice::PlainLz4));
        assert!(matches!(pick(100, 90, Some(136)), Choice::Plain));
        assert!(matches!(pick(100, 90, None), Choice::Plain));
        assert!(matches!(pick(89, 90, Some(10)), Choice::Split));
    }
}
