//! Streaming technical indicators for strategies: SMA (alone or as a fast/slow
//! pair), EMA, RSI, ATR, Bollinger bands, Donchian channels and rolling
//! mean/variance. Each indicator is fed one value (or one bar's high/low/close)
//! at a time with `update`, which returns `None` while the indicator is warming
//! up and `Some(value)` once it has seen enough data; `value` returns the last
//! result again without new input. ([`SmaPair`], made for crossover rules, is
//! fed with `push` and read with `compare`, `fast` and `slow`.)
//!
//! The library is built for the per-bar hot path: every buffer is allocated in
//! `new`, `update` never allocates and costs O(1) (amortized for [`Donchian`]
//! and [`RollingStats`]), and nothing panics on any input value. It uses only
//! `core` and `alloc`, and gives bit-identical results on `wasm32` and natively
//! (square roots are correctly rounded on both). On `wasm32` without the
//! `simd128` target feature, `core` offers no square root instruction and the
//! one in [`Bollinger`] and [`RollingStats`] is computed in integer arithmetic,
//! some tens of nanoseconds; guests built with `-C target-feature=+simd128` get
//! the instruction.
//!
//! [`Sma`], [`SmaPair`] and the middle band of [`Bollinger`] are *exact*:
//! inputs are rounded to a fixed-point grid (8 decimals by default) and summed
//! in integers, so two averages whose decimal means are equal give equal `f64`
//! values whatever their lengths, and crossover rules do not depend on
//! rounding noise.
//!
//! What it deliberately does not do: it does not validate bars (a high below
//! its low is used as given), it does not resample or align series, it keeps no
//! history beyond each indicator's window, and it is not a statistics library
//! (no quantiles, correlations or regressions).
//!
//! # Conventions
//!
//! - Constructors panic on settings out of range (a period of 0, or of 1 for
//!   [`RollingStats`], which needs a sample variance; a Bollinger period above
//!   [`Bollinger::MAX_PERIOD`]; a scale of 0), as documented under `# Panics`.
//!   That is a programming error in the strategy; the SDK's panic handler
//!   reports it to the strategy author.
//! - NaN or infinite inputs never panic. A *windowed* indicator ([`Sma`],
//!   [`Bollinger`], [`Donchian`], [`RollingStats`]) returns NaN while such a
//!   value is inside its window and recovers once it has left. A *recursive*
//!   indicator ([`Ema`], [`Rsi`], [`Atr`]) feeds each result into the next, so
//!   a NaN input makes every later value NaN until [`reset`](Ema::reset).
//! - Every indicator has `reset` to start over with the same settings.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

/// Default fixed-point scale of the exact indicators ([`Sma`], [`SmaPair`],
/// [`Bollinger`]): inputs are rounded to multiples of `1 / DEFAULT_SCALE`,
/// i.e. to 8 decimals.
pub const DEFAULT_SCALE: u64 = 100_000_000;

/// Largest magnitude of a quantized value, `2^53`: every quantized value is an
/// integer exactly representable as an `f64`.
const MAX_QUANTIZED: i64 = 1 << 53;

/// Marks a value in an exact window that could not be quantized (NaN, infinite
/// or out of range). Never a valid quantized value, since those are at most
/// `2^53` in magnitude.
const INVALID: i64 = i64::MIN;

// ---------------------------------------------------------------------------
// Float helpers that `core` does not give us with the semantics we need.
// ---------------------------------------------------------------------------

/// `|x|`, by clearing the sign bit.
#[inline]
fn abs(x: f64) -> f64 {
    f64::from_bits(x.to_bits() & !(1 << 63))
}

/// The larger of `a` and `b`, NaN if either is NaN (unlike `f64::max`, which
/// ignores a NaN).
#[inline]
fn max_nan(a: f64, b: f64) -> f64 {
    if a >= b {
        a
    } else if b > a {
        b
    } else {
        f64::NAN
    }
}

/// `x` if positive, else 0 (NaN stays NaN).
#[inline]
fn non_negative(x: f64) -> f64 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// Correctly rounded square root (IEEE 754 `sqrt`), identical on every target.
#[inline]
fn sqrt(x: f64) -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        x.sqrt()
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use core::arch::wasm32::{f64x2_extract_lane, f64x2_splat, f64x2_sqrt};
        f64x2_extract_lane::<0>(f64x2_sqrt(f64x2_splat(x)))
    }
    #[cfg(all(target_arch = "wasm32", not(target_feature = "simd128")))]
    {
        soft_sqrt(x)
    }
}

/// Correctly rounded square root for `wasm32` without SIMD, where `core` has
/// no stable scalar `sqrt` (neither `f64::sqrt` nor
/// `core::arch::wasm32::f64_sqrt` is stable). Tested bit for bit against the
/// hardware square root.
///
/// For a positive `x = m · 2^e` with `e` even (`m` is shifted left once if
/// needed), `sqrt(x) = sqrt(n) · 2^(e/2 - 26)` with the integer
/// `n = m · 2^52` in `[2^104, 2^106)`. The nearest integer `r` to `sqrt(n)`
/// has 53 bits, so it is the rounded mantissa. A division-free Newton
/// iteration for `1 / sqrt(m)` gives `r` to within a few units; the exact
/// residual `n - r²` then fixes it: `r` is the nearest integer exactly when
/// `-r < n - r² <= r` (ties are impossible between integers).
#[cfg(any(test, all(target_arch = "wasm32", not(target_feature = "simd128"))))]
fn soft_sqrt(x: f64) -> f64 {
    // NaN, negative, zero (of either sign) and +infinity.
    if x.is_nan() || x <= 0.0 || x == f64::INFINITY {
        return if x == 0.0 || x == f64::INFINITY {
            x
        } else {
            f64::NAN
        };
    }
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    // x = mantissa · 2^exp, mantissa in [2^52, 2^53).
    let (mantissa, exp) = if biased == 0 {
        // Subnormal: normalize so that bit 52 is the leading one.
        let shift = fraction.leading_zeros() - 11;
        (fraction << shift, -1074 - shift as i32)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    let (m, exp) = if exp & 1 != 0 {
        (mantissa << 1, exp - 1)
    } else {
        (mantissa, exp)
    };
    // Estimate: y ≈ 1 / sqrt(m) from the classic bit-level guess (within 4%)
    // and four Newton steps (each squares the error), r ≈ m · y · 2^26.
    let mf = m as f64; // exact: m < 2^54
    let half = 0.5 * mf;
    let mut y = f64::from_bits(0x5fe6_eb50_c7b5_37a9 - (mf.to_bits() >> 1));
    for _ in 0..4 {
        y *= 1.5 - half * y * y;
    }
    let mut r = ((mf * y * (1u64 << 26) as f64) as i64).clamp(1 << 52, 1 << 53);
    // Exact correction (normally zero to three steps).
    let n = i128::from(m) << 52;
    let mut res = n - i128::from(r) * i128::from(r);
    while res > i128::from(r) {
        res -= 2 * i128::from(r) + 1; // n - (r + 1)²
        r += 1;
    }
    while res <= -i128::from(r) {
        res += 2 * i128::from(r) - 1; // n - (r - 1)²
        r -= 1;
    }
    // r <= 2^53 converts exactly; the power of two is normal (exponent in
    // [-590, 459]), so the product is exact.
    let pow2 = f64::from_bits(((exp / 2 - 26 + 1023) as u64) << 52);
    (r as f64) * pow2
}

// ---------------------------------------------------------------------------
// Exact fixed-point windows of Sma, SmaPair and Bollinger.
// ---------------------------------------------------------------------------

/// Rounds `x · scale` to the nearest integer, halves away from zero; returns
/// [`INVALID`] when `x` is NaN or infinite or the result would exceed
/// [`MAX_QUANTIZED`] in magnitude.
///
/// Only the product is a float operation: the rounding reads the product's
/// bits. For `|y| <= 2^53`, `|y| = m · 2^-s` with `m` the significand, and
/// `round(|y|) = (m + 2^(s-1)) >> s` exactly (no float rounding, and no NaN
/// canonicalization on wasm, where every float result pays for one).
#[inline]
fn quantize(x: f64, scale: f64) -> i64 {
    const SIGN: u64 = 1 << 63;
    const FRACTION: u64 = (1 << 52) - 1;
    /// Bits of `2^53`. Magnitudes order like their bit patterns, and NaN and
    /// the infinities have larger patterns than any finite value.
    const MAX_BITS: u64 = (1023 + 53) << 52;
    let bits = (x * scale).to_bits();
    let magnitude = bits & !SIGN;
    if magnitude > MAX_BITS {
        return INVALID;
    }
    // Biased exponent, taken as 1 for zeros and subnormals (whose
    // significand has no implicit bit).
    let exponent = (magnitude >> 52) as i32;
    let significand = (magnitude & FRACTION) | (u64::from(exponent != 0) << 52);
    // |y| = significand · 2^-shift, shift in [-1, 1074]. From shift 55 on,
    // |y| < 1/2 and the formula gives 0 for any shift up to 63.
    let shift = 1075 - exponent.max(1);
    let rounded = if shift <= 0 {
        significand << -shift
    } else {
        let shift = shift.min(63) as u32;
        (significand + (1 << (shift - 1))) >> shift
    } as i64;
    // Apply the sign: negate when the sign bit is set.
    let negative = (bits as i64) >> 63;
    (rounded ^ negative) - negative
}

/// The exact sum of the quantized values in a window of `len` values.
#[derive(Clone, Copy, Debug)]
struct WindowSum {
    len: usize,
    /// Sum of the valid values. `|q| <= 2^53` and the window has fewer than
    /// `2^64` values, so `|sum| < 2^117`: it never overflows.
    sum: i128,
    /// How many [`INVALID`] values are in the window.
    invalid: usize,
}

impl WindowSum {
    fn new(len: usize) -> Self {
        WindowSum {
            len,
            sum: 0,
            invalid: 0,
        }
    }

    fn reset(&mut self) {
        self.sum = 0;
        self.invalid = 0;
    }

    #[inline]
    fn add(&mut self, q: i64) {
        if q == INVALID {
            self.invalid += 1;
        } else {
            self.sum += i128::from(q);
        }
    }

    #[inline]
    fn remove(&mut self, q: i64) {
        if q == INVALID {
            self.invalid -= 1;
        } else {
            self.sum -= i128::from(q);
        }
    }

    /// `(Q, R)` with `sum = Q · n + R` and `0 <= R < n` (floor division by
    /// the length `n`). `|Q| <= 2^53` because the mean of the window lies
    /// between its smallest and largest value.
    #[inline]
    fn floor_mean(&self) -> (i64, i64) {
        let n = self.len as i64;
        match i64::try_from(self.sum) {
            Ok(s) => (s.div_euclid(n), s.rem_euclid(n)),
            Err(_) => {
                let n = i128::from(n);
                (self.sum.div_euclid(n) as i64, self.sum.rem_euclid(n) as i64)
            }
        }
    }

    /// The mean of a full window in input units: `(Q + R / n) / scale`, NaN
    /// while the window holds an invalid value.
    ///
    /// `Q` and `R / n` are the integer and fractional parts of the exact mean
    /// of the quantized values, so every operation below has operands that
    /// depend only on that exact mean, not on `n` or on the size of the sum:
    /// equal exact means give bit-identical results, and (all roundings being
    /// monotone) a larger exact mean never gives a smaller result.
    #[inline]
    fn mean(&self, scale: f64) -> f64 {
        if self.invalid > 0 {
            return f64::NAN;
        }
        let (q, r) = self.floor_mean();
        self.mean_from(q, r, scale)
    }

    #[inline]
    fn mean_from(&self, q: i64, r: i64, scale: f64) -> f64 {
        (q as f64 + r as f64 / self.len as f64) / scale
    }

    /// Compares the exact means of two full windows at the same scale, in
    /// integers (each sum multiplied by the other window's length); `None`
    /// while either holds an invalid value.
    #[inline]
    fn compare(&self, other: &WindowSum, scale: f64) -> Option<core::cmp::Ordering> {
        if self.invalid > 0 || other.invalid > 0 {
            return None;
        }
        // Fast path in i64: |sum| < 2^53 and n < 2^10 keep each product below
        // 2^63, and wasm has no native 128-bit multiply (it calls a runtime
        // routine), so this is what a per-bar comparison should cost.
        // `small` is -2^53 <= sum < 2^53: with n < 2^10 each product
        // stays within i64.
        #[inline]
        fn small(sum: i128) -> bool {
            (sum as u128).wrapping_add(1 << 53) < 1 << 54
        }
        const LEN: usize = 1 << 10;
        if small(self.sum) && small(other.sum) && self.len < LEN && other.len < LEN {
            let x = self.sum as i64 * other.len as i64;
            let y = other.sum as i64 * self.len as i64;
            return Some(x.cmp(&y));
        }
        let (na, nb) = (self.len as i128, other.len as i128);
        match (self.sum.checked_mul(nb), other.sum.checked_mul(na)) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            // Sums beyond 2^117 / n: the f64 means are still ordered exactly
            // as their exact values, ties included.
            _ => self.mean(scale).partial_cmp(&other.mean(scale)),
        }
    }
}

/// Checks the settings of an exact indicator.
fn check_exact(period: usize, scale: u64, what: &str) {
    assert!(period > 0, "{what} period must be at least 1");
    assert!(
        (1..=MAX_QUANTIZED as u64).contains(&scale),
        "{what} scale must be between 1 and 2^53, got {scale}"
    );
}

/// Ring buffer of quantized values with their exact running sum.
#[derive(Clone, Debug)]
struct ExactWindow {
    /// The last `period` quantized values (or [`INVALID`]), oldest at `next`
    /// once full.
    q: Vec<i64>,
    /// Slot the next value goes into.
    next: usize,
    /// Values in the window, up to `q.len()`.
    filled: usize,
    sum: WindowSum,
    scale: u64,
    scale_f: f64,
}

impl ExactWindow {
    fn new(period: usize, scale: u64, what: &str) -> Self {
        check_exact(period, scale, what);
        ExactWindow {
            q: vec![0; period],
            next: 0,
            filled: 0,
            sum: WindowSum::new(period),
            scale,
            scale_f: scale as f64,
        }
    }

    #[inline]
    fn period(&self) -> usize {
        self.q.len()
    }

    #[inline]
    fn is_full(&self) -> bool {
        self.filled == self.q.len()
    }

    fn reset(&mut self) {
        self.next = 0;
        self.filled = 0;
        self.sum.reset();
    }

    /// Adds the quantized value `q` and returns the one it evicted, if the
    /// window was full.
    #[inline]
    fn push(&mut self, q: i64) -> Option<i64> {
        let old = if self.filled == self.q.len() {
            Some(self.q[self.next])
        } else {
            self.filled += 1;
            None
        };
        self.q[self.next] = q;
        self.next += 1;
        if self.next == self.q.len() {
            self.next = 0;
        }
        self.sum.add(q);
        if let Some(o) = old {
            self.sum.remove(o);
        }
        old
    }

    #[inline]
    fn mean(&self) -> f64 {
        self.sum.mean(self.scale_f)
    }
}

// ---------------------------------------------------------------------------
// Sma
// ---------------------------------------------------------------------------

/// Simple moving average of the last `n` values, computed exactly:
///
/// `SMA_t = (x_t + x_{t-1} + ... + x_{t-n+1}) / n`
///
/// Each input is quantized to the integer `q = round(x · scale)` (halves away
/// from zero; `scale` is [`DEFAULT_SCALE`] = `10^8` unless given with
/// [`Sma::with_scale`]) and the window's sum is kept exactly in integers. The
/// value is that exact rational mean converted to `f64` in a way that depends
/// only on the mean itself (see below), so:
///
/// - two `Sma`s of any lengths whose windows have the same exact decimal mean
///   return the *same* `f64`, and a larger exact mean never compares smaller
///   (means closer than the `f64` resolution at that price compare equal):
///   `fast > slow` is decided by the decimal prices, not by rounding;
/// - there is no drift, however long the series;
/// - the SMA of a constant price with up to 8 decimals is that very `f64`
///   (within the exact range given below).
///
/// The result is within about one ulp of the exact mean of the quantized
/// values (the conversion rounds twice: `(Q + R/n) / scale` with `Q`, `R` the
/// quotient and remainder of the integer sum by `n`).
///
/// # Limitations
///
/// Inputs are rounded to multiples of `1 / scale`: with the default scale a
/// value with more than 8 decimals moves the average by at most `0.5e-8 / n`
/// per value. Quantization is exact (the `f64` nearest to a price with at most
/// 8 decimals maps to that decimal) while `|x| · scale < 2^51`, about `2.2e7`
/// at the default scale: the input's own rounding and that of the product then
/// stay below 3/8 of a unit. Up to `2^53 / scale` (about `9e7`) the rounding
/// is still deterministic but may be off by one unit. Larger magnitudes, NaN
/// and infinities are not averaged: the value is NaN while such an input is in
/// the window. Use [`Sma::with_scale`] with a larger scale for assets quoted
/// with more decimals (this lowers the largest usable price in proportion).
///
/// ```
/// use palisade_sdk::indicators::Sma;
/// let mut sma = Sma::new(3);
/// assert_eq!(sma.update(1.0), None);
/// assert_eq!(sma.update(2.0), None);
/// assert_eq!(sma.update(3.0), Some(2.0));
/// assert_eq!(sma.update(4.0), Some(3.0));
/// ```
#[derive(Clone, Debug)]
pub struct Sma {
    window: ExactWindow,
}

impl Sma {
    /// An SMA over the last `period` values at the default scale (8 decimals).
    ///
    /// # Panics
    ///
    /// If `period` is 0.
    pub fn new(period: usize) -> Self {
        Self::with_scale(period, DEFAULT_SCALE)
    }

    /// An SMA over the last `period` values, with inputs rounded to multiples
    /// of `1 / scale` (normally `10^d` for prices with up to `d` decimals).
    ///
    /// # Panics
    ///
    /// If `period` is 0, or `scale` is 0 or larger than `2^53`.
    pub fn with_scale(period: usize, scale: u64) -> Self {
        Sma {
            window: ExactWindow::new(period, scale, "sma"),
        }
    }

    /// Adds `x` and returns the average of the last `period` values, or `None`
    /// until `period` values have been seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let q = quantize(x, self.window.scale_f);
        self.window.push(q);
        self.value()
    }

    /// The current average, or `None` during warm-up.
    #[inline]
    pub fn value(&self) -> Option<f64> {
        if self.window.is_full() {
            Some(self.window.mean())
        } else {
            None
        }
    }

    /// Adds `x` without computing the average: for strategies that only
    /// [`compare`](Sma::compare) averages, which then costs no division.
    #[inline]
    pub fn push(&mut self, x: f64) {
        let q = quantize(x, self.window.scale_f);
        self.window.push(q);
    }

    /// Compares this average with `other`'s exactly, in integers (the sums
    /// cross-multiplied by the other window's length): no rounding at all, so
    /// `Equal` means the decimal averages are equal. `None` until both are
    /// ready, while either window holds a NaN or out-of-range value, or when
    /// the two use different scales.
    ///
    /// ```
    /// use core::cmp::Ordering;
    /// use palisade_sdk::indicators::Sma;
    /// let (mut fast, mut slow) = (Sma::new(1), Sma::new(3));
    /// for x in [0.3, 0.1, 0.2] {
    ///     fast.push(x);
    ///     slow.push(x);
    /// }
    /// assert_eq!(fast.compare(&slow), Some(Ordering::Equal)); // 0.2 == (0.3 + 0.1 + 0.2) / 3
    /// ```
    #[inline]
    pub fn compare(&self, other: &Sma) -> Option<core::cmp::Ordering> {
        let (a, b) = (&self.window, &other.window);
        if !a.is_full() || !b.is_full() || a.scale != b.scale {
            return None;
        }
        a.sum.compare(&b.sum, a.scale_f)
    }

    /// Whether `period` values have been seen.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.window.is_full()
    }

    /// The window length `n`.
    pub fn period(&self) -> usize {
        self.window.period()
    }

    /// The fixed-point scale inputs are rounded with.
    pub fn scale(&self) -> u64 {
        self.window.scale
    }

    /// Forgets every value seen, keeping period and scale.
    pub fn reset(&mut self) {
        self.window.reset();
    }
}

// ---------------------------------------------------------------------------
// SmaPair
// ---------------------------------------------------------------------------

/// Two exact simple moving averages of one series, a fast and a slow one:
/// the indicator of crossover rules.
///
/// It gives what two [`Sma`]s of the same lengths and scale fed the same
/// values give ([`fast`](SmaPair::fast) and [`slow`](SmaPair::slow) are
/// bit-identical to their [`Sma::value`], [`compare`](SmaPair::compare) to
/// [`Sma::compare`]) for about half the work per value: each value is
/// quantized once and stored once, in one ring as long as the longer window,
/// and each window keeps its own exact sum.
///
/// The two lengths may be in either order or equal.
///
/// ```
/// use core::cmp::Ordering;
/// use palisade_sdk::indicators::SmaPair;
/// let mut pair = SmaPair::new(1, 3);
/// for x in [0.3, 0.1, 0.2] {
///     pair.push(x);
/// }
/// assert_eq!(pair.compare(), Some(Ordering::Equal)); // 0.2 == (0.3 + 0.1 + 0.2) / 3
/// pair.push(0.3);
/// assert_eq!(pair.compare(), Some(Ordering::Greater));
/// assert_eq!((pair.fast(), pair.slow()), (Some(0.3), Some(0.2)));
/// ```
#[derive(Clone, Debug)]
pub struct SmaPair {
    /// The last `max(fast, slow)` quantized values (or [`INVALID`]), the
    /// oldest at `next` once full.
    ring: Vec<i64>,
    /// Slot the next value goes into.
    next: usize,
    /// Values seen, up to `ring.len()`.
    seen: usize,
    fast: WindowSum,
    slow: WindowSum,
    scale: u64,
    scale_f: f64,
}

impl SmaPair {
    /// Averages over the last `fast` and the last `slow` values, at the
    /// default scale (8 decimals).
    ///
    /// # Panics
    ///
    /// If either period is 0.
    pub fn new(fast: usize, slow: usize) -> Self {
        Self::with_scale(fast, slow, DEFAULT_SCALE)
    }

    /// Averages with inputs rounded to multiples of `1 / scale`, as
    /// [`Sma::with_scale`].
    ///
    /// # Panics
    ///
    /// If either period is 0, or `scale` is 0 or larger than `2^53`.
    pub fn with_scale(fast: usize, slow: usize, scale: u64) -> Self {
        check_exact(fast, scale, "sma pair fast");
        check_exact(slow, scale, "sma pair slow");
        SmaPair {
            ring: vec![0; fast.max(slow)],
            next: 0,
            seen: 0,
            fast: WindowSum::new(fast),
            slow: WindowSum::new(slow),
            scale,
            scale_f: scale as f64,
        }
    }

    /// Adds `x` to both averages.
    #[inline]
    pub fn push(&mut self, x: f64) {
        let q = quantize(x, self.scale_f);
        let len = self.ring.len();
        // A full window of n values drops the value pushed n values ago.
        for window in [&mut self.fast, &mut self.slow] {
            if self.seen >= window.len {
                let at = self.next + len - window.len;
                let at = if at >= len { at - len } else { at };
                window.remove(self.ring[at]);
            }
            window.add(q);
        }
        self.ring[self.next] = q;
        self.next += 1;
        if self.next == len {
            self.next = 0;
        }
        if self.seen < len {
            self.seen += 1;
        }
    }

    /// The fast average compared with the slow one, exactly (as
    /// [`Sma::compare`]): `None` until both are ready and while either window
    /// holds a NaN or out-of-range value.
    #[inline]
    pub fn compare(&self) -> Option<core::cmp::Ordering> {
        if !self.is_ready() {
            return None;
        }
        self.fast.compare(&self.slow, self.scale_f)
    }

    /// The fast average, or `None` during its warm-up (as [`Sma::value`]).
    pub fn fast(&self) -> Option<f64> {
        (self.seen >= self.fast.len).then(|| self.fast.mean(self.scale_f))
    }

    /// The slow average, or `None` during its warm-up (as [`Sma::value`]).
    pub fn slow(&self) -> Option<f64> {
        (self.seen >= self.slow.len).then(|| self.slow.mean(self.scale_f))
    }

    /// Whether both averages are ready.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.seen == self.ring.len()
    }

    /// The window lengths, `(fast, slow)`.
    pub fn periods(&self) -> (usize, usize) {
        (self.fast.len, self.slow.len)
    }

    /// The fixed-point scale inputs are rounded with.
    pub fn scale(&self) -> u64 {
        self.scale
    }

    /// Forgets every value seen, keeping periods and scale.
    pub fn reset(&mut self) {
        self.next = 0;
        self.seen = 0;
        self.fast.reset();
        self.slow.reset();
    }
}

// ---------------------------------------------------------------------------
// Ema
// ---------------------------------------------------------------------------

/// Exponential moving average with smoothing factor `alpha = 2 / (n + 1)`,
/// seeded with the simple average of the first `n` values (the usual
/// definition, as in TA-Lib):
///
/// `EMA_{n-1} = (x_0 + ... + x_{n-1}) / n`,
/// `EMA_t = EMA_{t-1} + alpha · (x_t - EMA_{t-1})`
///
/// Ready after `n` values. The seed is summed in `f64` (it is not quantized
/// like [`Sma`]). A NaN input makes every later value NaN until
/// [`reset`](Ema::reset).
#[derive(Clone, Debug)]
pub struct Ema {
    period: usize,
    alpha: f64,
    /// Values seen, up to `period`.
    count: usize,
    /// Sum of the values during warm-up, then the EMA.
    ema: f64,
}

impl Ema {
    /// An EMA of length `period` (`alpha = 2 / (period + 1)`).
    ///
    /// # Panics
    ///
    /// If `period` is 0.
    pub fn new(period: usize) -> Self {
        assert!(period > 0, "ema period must be at least 1");
        Ema {
            period,
            alpha: 2.0 / (period as f64 + 1.0),
            count: 0,
            ema: 0.0,
        }
    }

    /// Adds `x` and returns the EMA, or `None` until `period` values have been
    /// seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        if self.count < self.period {
            self.count += 1;
            self.ema += x;
            if self.count < self.period {
                return None;
            }
            self.ema /= self.period as f64;
        } else {
            self.ema += self.alpha * (x - self.ema);
        }
        Some(self.ema)
    }

    /// The current EMA, or `None` during warm-up.
    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.is_ready().then_some(self.ema)
    }

    /// Whether `period` values have been seen.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.count == self.period
    }

    /// The length `n`.
    pub fn period(&self) -> usize {
        self.period
    }

    /// The smoothing factor `2 / (n + 1)`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Forgets every value seen, keeping the period.
    pub fn reset(&mut self) {
        self.count = 0;
        self.ema = 0.0;
    }
}

// ---------------------------------------------------------------------------
// Wilder smoothing, shared by Rsi and Atr.
// ---------------------------------------------------------------------------

/// Wilder's moving average: the mean of the first `n` inputs, then
/// `avg = (avg · (n - 1) + x) / n`.
#[derive(Clone, Debug)]
struct Wilder {
    period: usize,
    count: usize,
    /// Sum during warm-up, then the average.
    avg: f64,
}

impl Wilder {
    fn new(period: usize) -> Self {
        Wilder {
            period,
            count: 0,
            avg: 0.0,
        }
    }

    /// Adds `x`; returns whether the average is ready.
    #[inline]
    fn push(&mut self, x: f64) -> bool {
        let n = self.period as f64;
        if self.count < self.period {
            self.count += 1;
            self.avg += x;
            if self.count < self.period {
                return false;
            }
            self.avg /= n;
        } else {
            self.avg = (self.avg * (n - 1.0) + x) / n;
        }
        true
    }

    #[inline]
    fn is_ready(&self) -> bool {
        self.count == self.period
    }

    fn reset(&mut self) {
        self.count = 0;
        self.avg = 0.0;
    }
}

// ---------------------------------------------------------------------------
// Rsi
// ---------------------------------------------------------------------------

/// Wilder's Relative Strength Index over `n` changes, in `[0, 100]`.
///
/// With changes `d_t = x_t - x_{t-1}`, gains `g_t = max(d_t, 0)` and losses
/// `l_t = max(-d_t, 0)`: the first average gain `G` and loss `L` are the
/// simple means of the first `n` gains and losses, then each is smoothed as
/// `G = (G · (n - 1) + g_t) / n` (likewise `L`), and
///
/// `RSI = 100 - 100 / (1 + G / L) = 100 · G / (G + L)`
///
/// (computed in the second form). When `L = 0` the RSI is 100; when both `G`
/// and `L` are 0 (a flat series) it is 50. Ready after `n + 1` values. A NaN
/// input makes every later value NaN until [`reset`](Rsi::reset).
#[derive(Clone, Debug)]
pub struct Rsi {
    prev: Option<f64>,
    gain: Wilder,
    loss: Wilder,
}

impl Rsi {
    /// An RSI over `period` changes.
    ///
    /// # Panics
    ///
    /// If `period` is 0.
    pub fn new(period: usize) -> Self {
        assert!(period > 0, "rsi period must be at least 1");
        Rsi {
            prev: None,
            gain: Wilder::new(period),
            loss: Wilder::new(period),
        }
    }

    /// Adds `x` and returns the RSI, or `None` until `period + 1` values have
    /// been seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let prev = self.prev.replace(x)?;
        let d = x - prev;
        let (g, l) = if d > 0.0 {
            (d, 0.0)
        } else if d < 0.0 {
            (0.0, -d)
        } else if d == 0.0 {
            (0.0, 0.0)
        } else {
            (f64::NAN, f64::NAN)
        };
        self.gain.push(g);
        self.loss.push(l);
        self.value()
    }

    /// The current RSI, or `None` during warm-up.
    #[inline]
    pub fn value(&self) -> Option<f64> {
        if !self.is_ready() {
            return None;
        }
        let (g, l) = (self.gain.avg, self.loss.avg);
        let total = g + l;
        Some(if total == 0.0 { 50.0 } else { 100.0 * g / total })
    }

    /// Whether `period + 1` values have been seen.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.gain.is_ready()
    }

    /// The number of changes `n` averaged.
    pub fn period(&self) -> usize {
        self.gain.period
    }

    /// Forgets every value seen, keeping the period.
    pub fn reset(&mut self) {
        self.prev = None;
        self.gain.reset();
        self.loss.reset();
    }
}

// ---------------------------------------------------------------------------
// Atr
// ---------------------------------------------------------------------------

/// Wilder's Average True Range over `n` bars.
///
/// The true range of a bar is
/// `TR = max(high - low, |high - prev_close|, |low - prev_close|)`, and
/// `high - low` for the first bar (which has no previous close). The first ATR
/// is the mean of the first `n` true ranges, then
/// `ATR = (ATR · (n - 1) + TR) / n`. Ready after `n` bars. (TA-Lib instead
/// skips the first bar and is ready after `n + 1`.)
///
/// A NaN in any input makes every later value NaN until
/// [`reset`](Atr::reset).
#[derive(Clone, Debug)]
pub struct Atr {
    prev_close: Option<f64>,
    avg: Wilder,
}

impl Atr {
    /// An ATR over `period` bars.
    ///
    /// # Panics
    ///
    /// If `period` is 0.
    pub fn new(period: usize) -> Self {
        assert!(period > 0, "atr period must be at least 1");
        Atr {
            prev_close: None,
            avg: Wilder::new(period),
        }
    }

    /// Adds a bar and returns the ATR, or `None` until `period` bars have been
    /// seen.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let range = high - low;
        let tr = match self.prev_close.replace(close) {
            None => range,
            Some(pc) => max_nan(range, max_nan(abs(high - pc), abs(low - pc))),
        };
        self.avg.push(tr).then_some(self.avg.avg)
    }

    /// The current ATR, or `None` during warm-up.
    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.avg.is_ready().then_some(self.avg.avg)
    }

    /// Whether `period` bars have been seen.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.avg.is_ready()
    }

    /// The number of bars `n` averaged.
    pub fn period(&self) -> usize {
        self.avg.period
    }

    /// Forgets every bar seen, keeping the period.
    pub fn reset(&mut self) {
        self.prev_close = None;
        self.avg.reset();
    }
}

// ---------------------------------------------------------------------------
// Bollinger
// ---------------------------------------------------------------------------

/// One reading of [`Bollinger`] bands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BollingerBands {
    /// `middle - k · stddev`.
    pub lower: f64,
    /// The exact SMA of the window (bit-identical to [`Sma`] with the same
    /// period and scale).
    pub middle: f64,
    /// `middle + k · stddev`.
    pub upper: f64,
    /// Population standard deviation of the window (always `>= 0`).
    pub stddev: f64,
}

/// Bollinger bands over the last `n` values, `k` standard deviations wide:
///
/// `middle = SMA_n`, `upper = middle + k · σ`, `lower = middle - k · σ`,
///
/// where `σ` is the *population* standard deviation of the window,
/// `σ² = (n · Σx² - (Σx)²) / n²`.
///
/// Inputs are quantized like [`Sma`] (`q = round(x · scale)`), and `σ` comes
/// from exact integer sums of `q` and `q²`: the numerator `n · Σq² - (Σq)²` is
/// computed exactly in 128-bit integers (falling back to `f64` for the last
/// step only when it exceeds 128 bits, which needs both huge prices and a long
/// window), then `σ = sqrt(numerator) / (n · scale)`. So a constant window has
/// `σ = 0` exactly and there is no drift. Ready after `n` values; NaN and
/// out-of-range inputs are handled as in [`Sma`].
///
/// `k` is normally positive; it is not checked (a negative `k` swaps the
/// bands, a NaN `k` makes them NaN).
#[derive(Clone, Debug)]
pub struct Bollinger {
    window: ExactWindow,
    /// `Σq²` of the valid values in the window, modulo `2^128` (the true value
    /// is below `2^127` given `|q| <= 2^53` and the period limit).
    sum_sq: u128,
    k: f64,
}

impl Bollinger {
    /// Largest period accepted, `2^20`, which keeps the exact sums of squares
    /// within 128 bits for every quantizable input.
    pub const MAX_PERIOD: usize = 1 << 20;

    /// Bands over `period` values, `k` standard deviations wide, at the default
    /// scale (8 decimals).
    ///
    /// # Panics
    ///
    /// If `period` is 0 or larger than [`Bollinger::MAX_PERIOD`].
    pub fn new(period: usize, k: f64) -> Self {
        Self::with_scale(period, k, DEFAULT_SCALE)
    }

    /// Bands with inputs rounded to multiples of `1 / scale`, as
    /// [`Sma::with_scale`].
    ///
    /// # Panics
    ///
    /// If `period` is 0 or larger than [`Bollinger::MAX_PERIOD`], or `scale`
    /// is 0 or larger than `2^53`.
    pub fn with_scale(period: usize, k: f64, scale: u64) -> Self {
        assert!(
            period <= Self::MAX_PERIOD,
            "bollinger period must be at most 2^20, got {period}"
        );
        Bollinger {
            window: ExactWindow::new(period, scale, "bollinger"),
            sum_sq: 0,
            k,
        }
    }

    /// Adds `x` and returns the bands, or `None` until `period` values have
    /// been seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<BollingerBands> {
        let q = quantize(x, self.window.scale_f);
        let old = self.window.push(q);
        if q != INVALID {
            self.sum_sq = self.sum_sq.wrapping_add(square(q));
        }
        if let Some(o) = old {
            if o != INVALID {
                self.sum_sq = self.sum_sq.wrapping_sub(square(o));
            }
        }
        self.value()
    }

    /// The current bands, or `None` during warm-up.
    pub fn value(&self) -> Option<BollingerBands> {
        if !self.window.is_full() {
            return None;
        }
        if self.window.sum.invalid > 0 {
            return Some(BollingerBands {
                lower: f64::NAN,
                middle: f64::NAN,
                upper: f64::NAN,
                stddev: f64::NAN,
            });
        }
        let n = self.window.period();
        let (qm, r) = self.window.sum.floor_mean();
        let middle = self.window.sum.mean_from(qm, r, self.window.scale_f);
        // With the exact mean m = qm + r/n of the quantized values:
        // d = Σ(q - qm)² = Σq² - 2·qm·Σq + n·qm², computed modulo 2^128. The
        // true d is below 2^128 (|q - qm| < 2^54 and n <= 2^20), so the
        // wrapped result is exact even when the intermediate terms are not.
        let nn = n as u128;
        let s = self.window.sum.sum as u128;
        let m = i128::from(qm) as u128;
        let d = self
            .sum_sq
            .wrapping_sub(m.wrapping_mul(s).wrapping_mul(2))
            .wrapping_add(nn.wrapping_mul(m).wrapping_mul(m));
        // n² · variance = n · Σ(q - m)² = n·d - r² (>= 0 by construction).
        let r = r as u128;
        let n2_var = match nn.checked_mul(d) {
            Some(nd) => nd.saturating_sub(r * r) as f64,
            None => non_negative(d as f64 * n as f64 - (r * r) as f64),
        };
        let stddev = sqrt(n2_var) / (n as f64 * self.window.scale_f);
        let width = self.k * stddev;
        Some(BollingerBands {
            lower: middle - width,
            middle,
            upper: middle + width,
            stddev,
        })
    }

    /// Whether `period` values have been seen.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.window.is_full()
    }

    /// The window length `n`.
    pub fn period(&self) -> usize {
        self.window.period()
    }

    /// The band width in standard deviations.
    pub fn k(&self) -> f64 {
        self.k
    }

    /// The fixed-point scale inputs are rounded with.
    pub fn scale(&self) -> u64 {
        self.window.scale
    }

    /// Forgets every value seen, keeping period, `k` and scale.
    pub fn reset(&mut self) {
        self.window.reset();
        self.sum_sq = 0;
    }
}

/// `q²` of a quantized value (`|q| <= 2^53`, so `q² <= 2^106`).
#[inline]
fn square(q: i64) -> u128 {
    let q = i128::from(q);
    (q * q) as u128
}

// ---------------------------------------------------------------------------
// Donchian
// ---------------------------------------------------------------------------

/// One reading of a [`Donchian`] channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DonchianChannel {
    /// Highest high of the window.
    pub upper: f64,
    /// Lowest low of the window.
    pub lower: f64,
    /// `(upper + lower) / 2`.
    pub middle: f64,
}

/// Donchian channel over the last `n` bars:
///
/// `upper = max(high_{t-n+1}, ..., high_t)`,
/// `lower = min(low_{t-n+1}, ..., low_t)`, `middle = (upper + lower) / 2`.
///
/// `upper` and `lower` are input values, returned exactly. Two monotonic
/// deques give O(1) amortized updates. Ready after `n` bars. A NaN high makes
/// `upper` (and `middle`) NaN while it is in the window, likewise a NaN low for
/// `lower`.
#[derive(Clone, Debug)]
pub struct Donchian {
    period: usize,
    /// Bars seen (the index the next bar gets).
    seen: u64,
    /// (bar index, high), indices increasing, highs strictly decreasing: the
    /// front is the window's highest high.
    highs: VecDeque<(u64, f64)>,
    /// (bar index, low), indices increasing, lows strictly increasing.
    lows: VecDeque<(u64, f64)>,
    /// `upper` is NaN while `seen <= high_nan_until`: a NaN high at bar `i`
    /// sets it to `i + n`, the number of bars seen when it is last in the
    /// window.
    high_nan_until: u64,
    /// Same for `lower`.
    low_nan_until: u64,
}

impl Donchian {
    /// A channel over `period` bars.
    ///
    /// # Panics
    ///
    /// If `period` is 0.
    pub fn new(period: usize) -> Self {
        assert!(period > 0, "donchian period must be at least 1");
        Donchian {
            period,
            seen: 0,
            highs: VecDeque::with_capacity(period),
            lows: VecDeque::with_capacity(period),
            high_nan_until: 0,
            low_nan_until: 0,
        }
    }

    /// Adds a bar and returns the channel, or `None` until `period` bars have
    /// been seen.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64) -> Option<DonchianChannel> {
        let t = self.seen;
        self.seen = self.seen.saturating_add(1);
        let n = self.period as u64;
        // Bar `i` stays in the window while the newest bar is below i + n.
        let expired = |&(i, _): &(u64, f64)| i.saturating_add(n) <= t;
        while self.highs.front().is_some_and(expired) {
            self.highs.pop_front();
        }
        while self.lows.front().is_some_and(expired) {
            self.lows.pop_front();
        }
        if high.is_nan() {
            self.high_nan_until = t.saturating_add(n);
        } else {
            while self.highs.back().is_some_and(|&(_, h)| h <= high) {
                self.highs.pop_back();
            }
            self.highs.push_back((t, high));
        }
        if low.is_nan() {
            self.low_nan_until = t.saturating_add(n);
        } else {
            while self.lows.back().is_some_and(|&(_, l)| l >= low) {
                self.lows.pop_back();
            }
            self.lows.push_back((t, low));
        }
        self.value()
    }

    /// The current channel, or `None` during warm-up.
    #[inline]
    pub fn value(&self) -> Option<DonchianChannel> {
        if !self.is_ready() {
            return None;
        }
        let upper = match self.highs.front() {
            Some(&(_, h)) if self.seen > self.high_nan_until => h,
            _ => f64::NAN,
        };
        let lower = match self.lows.front() {
            Some(&(_, l)) if self.seen > self.low_nan_until => l,
            _ => f64::NAN,
        };
        Some(DonchianChannel {
            upper,
            lower,
            middle: 0.5 * upper + 0.5 * lower,
        })
    }

    /// Whether `period` bars have been seen.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.seen >= self.period as u64
    }

    /// The window length `n`.
    pub fn period(&self) -> usize {
        self.period
    }

    /// Forgets every bar seen, keeping the period.
    pub fn reset(&mut self) {
        self.seen = 0;
        self.highs.clear();
        self.lows.clear();
        self.high_nan_until = 0;
        self.low_nan_until = 0;
    }
}

// ---------------------------------------------------------------------------
// RollingStats
// ---------------------------------------------------------------------------

/// One reading of [`RollingStats`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowStats {
    /// `Σx / n`.
    pub mean: f64,
    /// Sample variance `Σ(x - mean)² / (n - 1)` (always `>= 0`).
    pub variance: f64,
    /// `sqrt(variance)`.
    pub stddev: f64,
}

/// Rolling mean and sample variance of the last `n` values of any series
/// (returns, spreads, volumes), in `f64`:
///
/// `mean = Σx / n`, `variance = Σ(x - mean)² / (n - 1)`.
///
/// Method: Welford's update while the window fills, and its sliding form once
/// full (replacing `x_old` by `x_new`:
/// `mean' = mean + (x_new - x_old) / n`,
/// `M2' = M2 + (x_new - x_old) · (x_new - mean' + x_old - mean)`).
/// To keep rounding errors from accumulating, the statistics are recomputed
/// from the window every `n` updates with the corrected two-pass algorithm
/// (`M2 = Σd² - (Σd)² / n`, `d = x - mean`); that is O(1) amortized and bounds
/// the error by what one window can accumulate. In between, the variance's
/// error is a few ulps of the *largest* `M2` since the last recomputation, so
/// right after the variance drops sharply (say a thousandfold) its relative
/// error can reach about `1e-12`. Unlike [`Sma`] the inputs are not quantized.
///
/// Ready after `n` values. A NaN or infinite input makes the statistics NaN
/// while it is in the window; once it has left they are recomputed. Finite
/// inputs so large that their sum overflows give non-finite statistics until
/// the next periodic recomputation after they have left (at most `2n` updates
/// later).
#[derive(Clone, Debug)]
pub struct RollingStats {
    /// The last `period` values, oldest at `next` once full.
    buf: Vec<f64>,
    next: usize,
    filled: usize,
    mean: f64,
    /// Sum of squared deviations from the mean.
    m2: f64,
    /// Non-finite values in the window.
    bad: usize,
    /// `mean` and `m2` must be recomputed from the window (they were not
    /// maintained while a non-finite value was in it).
    stale: bool,
}

impl RollingStats {
    /// Statistics over the last `period` values.
    ///
    /// # Panics
    ///
    /// If `period` is below 2 (a sample variance needs two values).
    pub fn new(period: usize) -> Self {
        assert!(
            period >= 2,
            "rolling stats period must be at least 2, got {period}"
        );
        RollingStats {
            buf: vec![0.0; period],
            next: 0,
            filled: 0,
            mean: 0.0,
            m2: 0.0,
            bad: 0,
            stale: false,
        }
    }

    /// Adds `x` and returns the statistics, or `None` until `period` values
    /// have been seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<WindowStats> {
        let n = self.buf.len();
        let old = if self.filled == n {
            Some(self.buf[self.next])
        } else {
            self.filled += 1;
            None
        };
        self.buf[self.next] = x;
        self.next += 1;
        if self.next == n {
            self.next = 0;
        }
        if !x.is_finite() {
            self.bad += 1;
        }
        if old.is_some_and(|o| !o.is_finite()) {
            self.bad -= 1;
        }
        if self.bad > 0 {
            self.stale = true;
        } else if self.stale || self.next == 0 {
            self.recompute();
        } else {
            match old {
                None => {
                    let delta = x - self.mean;
                    self.mean += delta / self.filled as f64;
                    self.m2 += delta * (x - self.mean);
                }
                Some(o) => {
                    let d = x - o;
                    let mean = self.mean + d / n as f64;
                    self.m2 += d * ((x - mean) + (o - self.mean));
                    self.mean = mean;
                }
            }
        }
        self.value()
    }

    /// Corrected two-pass computation of `mean` and `m2` over the window.
    fn recompute(&mut self) {
        let values = &self.buf[..self.filled];
        let c = self.filled as f64;
        let mean = values.iter().sum::<f64>() / c;
        let (mut sum_d, mut sum_d2) = (0.0, 0.0);
        for &x in values {
            let d = x - mean;
            sum_d += d;
            sum_d2 += d * d;
        }
        self.mean = mean + sum_d / c;
        self.m2 = non_negative(sum_d2 - sum_d * sum_d / c);
        self.stale = false;
    }

    /// The current statistics, or `None` during warm-up.
    #[inline]
    pub fn value(&self) -> Option<WindowStats> {
        if !self.is_ready() {
            return None;
        }
        if self.bad > 0 {
            return Some(WindowStats {
                mean: f64::NAN,
                variance: f64::NAN,
                stddev: f64::NAN,
            });
        }
        let variance = non_negative(self.m2) / (self.buf.len() - 1) as f64;
        Some(WindowStats {
            mean: self.mean,
            variance,
            stddev: sqrt(variance),
        })
    }

    /// The current mean, or `None` during warm-up.
    pub fn mean(&self) -> Option<f64> {
        self.value().map(|s| s.mean)
    }

    /// The current sample variance, or `None` during warm-up.
    pub fn variance(&self) -> Option<f64> {
        self.value().map(|s| s.variance)
    }

    /// The current sample standard deviation, or `None` during warm-up.
    pub fn stddev(&self) -> Option<f64> {
        self.value().map(|s| s.stddev)
    }

    /// Whether `period` values have been seen.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.filled == self.buf.len()
    }

    /// The window length `n`.
    pub fn period(&self) -> usize {
        self.buf.len()
    }

    /// Forgets every value seen, keeping the period.
    pub fn reset(&mut self) {
        self.next = 0;
        self.filled = 0;
        self.mean = 0.0;
        self.m2 = 0.0;
        self.bad = 0;
        self.stale = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use std::format;

    // -- Test data ----------------------------------------------------------

    /// SplitMix64: a tiny seeded PRNG, so every test sees the same data.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in `lo..=hi`.
        fn range(&mut self, lo: i64, hi: i64) -> i64 {
            lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
        }

        /// Uniform in `[0, 1)`.
        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A random walk of prices in ticks of 0.0001 (as integers), starting at
    /// `start` and moving by at most `step` ticks a bar, never below 1.
    fn walk(seed: u64, len: usize, start: i64, step: i64) -> Vec<i64> {
        let mut rng = Rng(seed);
        let mut k = start;
        (0..len)
            .map(|_| {
                k = (k + rng.range(-step, step)).max(1);
                k
            })
            .collect()
    }

    /// Ticks of 0.0001 as the `f64` nearest to their decimal value.
    fn prices(ticks: &[i64]) -> Vec<f64> {
        ticks.iter().map(|&k| k as f64 / 1e4).collect()
    }

    /// Bars `(high, low, close)` around a random walk.
    fn bars(seed: u64, len: usize) -> Vec<(f64, f64, f64)> {
        let mut rng = Rng(seed ^ 0x5555);
        walk(seed, len, 1_000_000, 300)
            .into_iter()
            .map(|k| {
                let high = k + rng.range(0, 400);
                let low = (k - rng.range(0, 400)).max(1);
                (high as f64 / 1e4, low as f64 / 1e4, k as f64 / 1e4)
            })
            .collect()
    }

    /// Uniform reals in `center ± spread`, with all their digits.
    fn reals(seed: u64, len: usize, center: f64, spread: f64) -> Vec<f64> {
        let mut rng = Rng(seed);
        (0..len)
            .map(|_| center + spread * (2.0 * rng.unit() - 1.0))
            .collect()
    }

    // -- Comparison helpers -------------------------------------------------

    /// Distance in units in the last place between two finite doubles.
    fn ulps(a: f64, b: f64) -> u64 {
        let key = |x: f64| {
            let b = x.to_bits() as i64;
            if b < 0 {
                i64::MIN - b
            } else {
                b
            }
        };
        key(a).abs_diff(key(b))
    }

    fn close(a: f64, b: f64, rel: f64, abs_tol: f64) -> bool {
        (a - b).abs() <= abs_tol + rel * a.abs().max(b.abs())
    }

    fn assert_close_seq(what: &str, got: &[Option<f64>], expected: &[Option<f64>]) {
        assert_eq!(got.len(), expected.len(), "{what}: lengths");
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            let ok = match (g, e) {
                (None, None) => true,
                (Some(g), Some(e)) => close(*g, *e, 1e-12, 1e-12),
                _ => false,
            };
            assert!(
                ok,
                "{what}: step {i}: got {g:?}, expected {e:?}\n got all: {got:?}"
            );
        }
    }

    // -- soft_sqrt ----------------------------------------------------------

    #[test]
    fn soft_sqrt_is_bit_identical_to_hardware_sqrt() {
        let specials = [
            0.0,
            -0.0,
            1.0,
            2.0,
            4.0,
            0.25,
            f64::MIN_POSITIVE,
            f64::from_bits(1),
            f64::from_bits(0x000f_ffff_ffff_ffff),
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            f64::NAN,
            1.0 - f64::EPSILON / 2.0,
            1.0 + f64::EPSILON,
            f64::from_bits(2.0f64.to_bits() - 1),
            f64::from_bits(4.0f64.to_bits() - 1),
            f64::from_bits(0x0010_0000_0000_0001),
        ];
        let mut rng = Rng(7);
        let randoms = (0..300_000).map(|i| match i % 3 {
            // Any positive double, subnormals included.
            0 => f64::from_bits(rng.next_u64() >> 1),
            // Near perfect squares of 26-bit integers, where rounding is tight.
            1 => {
                let r = rng.range(1 << 25, 1 << 26) as f64;
                f64::from_bits((r * r).to_bits() + rng.range(0, 4) as u64 - 2)
            }
            // Ordinary magnitudes.
            _ => rng.unit() * 1e6,
        });
        for x in specials.into_iter().chain(randoms) {
            let (got, want) = (soft_sqrt(x), x.sqrt());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "sqrt({x:e} = {:#x}): got {got:e}, want {want:e}",
                x.to_bits()
            );
        }
    }

    // -- Sma ----------------------------------------------------------------

    fn check_sma(period: usize, input: &[f64], expected: &[Option<f64>]) {
        let mut sma = Sma::new(period);
        let got: Vec<_> = input.iter().map(|&x| sma.update(x)).collect();
        assert_eq!(got, expected, "Sma({period}) of {input:?}");
        assert_eq!(sma.value(), *expected.last().unwrap());
        assert_eq!(sma.is_ready(), expected.last().unwrap().is_some());
    }

    #[test]
    fn sma_small_cases() {
        check_sma(3, &[1.0, 2.0, 3.0, 4.0], &[None, None, Some(2.0), Some(3.0)]);
        check_sma(
            1,
            &[101.2345, -3.5, 0.0],
            &[Some(101.2345), Some(-3.5), Some(0.0)],
        );
        // Exact decimal means come out as the f64 nearest to the decimal,
        // where a float sum gives (1.1 + 1.3) / 2 = 1.2000000000000002.
        check_sma(2, &[1.1, 1.3], &[None, Some(1.2)]);
        check_sma(3, &[0.1, 0.2, 0.3], &[None, None, Some(0.2)]);
        check_sma(4, &[-1.0, -2.0, -3.0, -4.5], &[None, None, None, Some(-2.625)]);
        check_sma(2, &[0.00000001, 0.00000002], &[None, Some(0.000000015)]);
    }

    #[test]
    fn sma_of_a_constant_decimal_is_that_value() {
        for x in [101.2345, 0.00000001, 12345678.12345678, -0.5, 99999.99999999] {
            let mut sma = Sma::new(7);
            let last = (0..20).map(|_| sma.update(x)).last().unwrap();
            assert_eq!(last, Some(x), "Sma(7) of constant {x}");
        }
    }

    #[test]
    fn sma_rounds_inputs_half_away_from_zero() {
        let cases = [
            (2.5, 3.0),
            (-2.5, -3.0),
            (1.4999, 1.0),
            (-1.4999, -1.0),
            (0.5, 1.0),
            (-0.5, -1.0),
            (0.49999999999999994, 0.0),
            (2.0f64.powi(53), 2.0f64.powi(53)),
            (-(2.0f64.powi(53)), -(2.0f64.powi(53))),
        ];
        for (x, want) in cases {
            let mut sma = Sma::with_scale(1, 1);
            assert_eq!(sma.update(x), Some(want), "quantize({x}) at scale 1");
        }
        let mut sma = Sma::with_scale(2, 100);
        assert_eq!(sma.update(1.005), None);
        // 1.005 is stored as 1.00499999999999989..., so it rounds down.
        assert_eq!(sma.update(2.0), Some(1.5));
        assert_eq!(sma.scale(), 100);
        assert_eq!(sma.period(), 2);
    }

    /// The definition `quantize` implements with integer operations on the
    /// product's bits: truncate, then step away from zero on a fraction of at
    /// least one half.
    fn quantize_by_definition(x: f64, scale: f64) -> i64 {
        let y = x * scale;
        if y.is_nan() || y.abs() > MAX_QUANTIZED as f64 {
            return INVALID;
        }
        let t = y.trunc();
        let frac = y - t; // exact for |y| <= 2^53
        let r = if frac >= 0.5 {
            t + 1.0
        } else if frac <= -0.5 {
            t - 1.0
        } else {
            t
        };
        r as i64
    }

    #[test]
    fn quantize_rounds_as_defined_on_every_kind_of_input() {
        let two53 = 2.0f64.powi(53);
        let mut specials = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            0.49999999999999994,
            -0.49999999999999994,
            f64::MIN_POSITIVE,
            f64::from_bits(1),
            -f64::from_bits(1),
            two53,
            -two53,
            f64::from_bits(two53.to_bits() + 1),
            f64::from_bits(two53.to_bits() - 1),
            2.0f64.powi(52) + 0.5,
            2.0f64.powi(52) - 0.5,
            2.0f64.powi(51) + 0.5,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
            f64::MAX,
        ];
        // Every k + 1/2 and its neighbours over a range of magnitudes.
        for e in 0..53 {
            let k = 2.0f64.powi(e);
            for y in [k - 0.5, k + 0.5, k + 1.5] {
                for z in [
                    y,
                    f64::from_bits(y.to_bits() + 1),
                    f64::from_bits(y.to_bits() - 1),
                ] {
                    specials.push(z);
                    specials.push(-z);
                }
            }
        }
        let mut rng = Rng(11);
        let randoms: Vec<f64> = (0..400_000)
            .map(|i| match i % 4 {
                // Any double.
                0 => f64::from_bits(rng.next_u64()),
                // Magnitudes around the range limit and the rounding unit.
                1 => (rng.unit() - 0.5) * 2.0f64.powi(rng.range(-60, 56) as i32),
                // Prices with up to 10 decimals.
                2 => rng.range(-10_000_000_000_000, 10_000_000_000_000) as f64 / 1e10,
                _ => rng.unit() * 1e6,
            })
            .collect();
        let mut scales = vec![1.0, 100.0, 1e8, 2.0f64.powi(53)];
        scales.extend((0..4).map(|_| rng.range(2, 1 << 53) as f64));
        for scale in scales {
            for &x in specials.iter().chain(&randoms) {
                assert_eq!(
                    quantize(x, scale),
                    quantize_by_definition(x, scale),
                    "quantize({x:e} = {:#x}, {scale})",
                    x.to_bits()
                );
            }
        }
    }

    #[test]
    fn sma_out_of_range_inputs_are_nan_while_in_the_window() {
        let mut sma = Sma::with_scale(2, 1);
        sma.update(1.0);
        assert!(sma.update(2.0f64.powi(54)).unwrap().is_nan());
        assert!(sma.update(3.0).unwrap().is_nan());
        assert_eq!(sma.update(5.0), Some(4.0));
        assert!(Sma::new(1).update(1e12).unwrap().is_nan());
        assert_eq!(Sma::new(1).update(2.2e7), Some(2.2e7));
    }

    /// Compares `Sma(period)` over 4-decimal prices with the exact mean of the
    /// window, converted once: they may differ by the double rounding only.
    fn check_sma_exact(period: usize, ticks: &[i64]) {
        let mut sma = Sma::new(period);
        for (t, x) in prices(ticks).into_iter().enumerate() {
            let got = sma.update(x);
            if t + 1 < period {
                assert_eq!(got, None);
                continue;
            }
            let sum: i64 = ticks[t + 1 - period..=t].iter().sum();
            let want = sum as f64 / (period as f64 * 1e4);
            let got = got.unwrap();
            assert!(
                ulps(got, want) <= 1,
                "Sma({period}) at step {t}: got {got:?}, exact {want:?}"
            );
        }
    }

    #[test]
    fn sma_matches_exact_mean() {
        for (seed, period) in [(1, 1), (2, 2), (3, 3), (4, 5), (5, 20), (6, 200), (7, 999)] {
            check_sma_exact(period, &walk(seed, 5_000, 1_012_345, 500));
        }
        // Prices from 0.0001 up and cheap coins.
        check_sma_exact(10, &walk(8, 5_000, 30, 3));
        // Long series: an exact sum has no drift.
        check_sma_exact(50, &walk(9, 100_000, 1_000_000, 200));
        // Large prices, with sums beyond 2^53 and beyond 2^63.
        check_sma_exact(1_000, &walk(10, 5_000, 500_000_000, 5_000));
        check_sma_exact(5_000, &walk(11, 8_000, 200_000_000_000, 5_000));
    }

    #[test]
    fn sma_of_arbitrary_reals_is_within_the_quantization_step() {
        for (seed, period) in [(1, 3), (2, 17), (3, 250)] {
            let xs = reals(seed, 20_000, 0.0, 1000.0);
            let mut sma = Sma::new(period);
            for (t, &x) in xs.iter().enumerate() {
                let got = sma.update(x);
                if t + 1 >= period {
                    let window = &xs[t + 1 - period..=t];
                    let want = window.iter().sum::<f64>() / period as f64;
                    let got = got.unwrap();
                    assert!(
                        close(got, want, 1e-12, 0.5e-8),
                        "Sma({period}) at step {t}: got {got}, reference {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn sma_ties_are_exact() {
        let mut fast = Sma::new(2);
        let mut slow = Sma::new(4);
        let mut last = (None, None);
        for x in [1.1, 1.3, 1.2, 1.2] {
            last = (fast.update(x), slow.update(x));
        }
        assert_eq!(last, (Some(1.2), Some(1.2)));
        // A float sum does not see the tie.
        assert_ne!((1.2 + 1.2) / 2.0, (1.1 + 1.3 + 1.2 + 1.2) / 4.0);
    }

    /// For random 4-decimal prices: two SMAs are equal exactly when their
    /// decimal means are, and otherwise compare as the decimal means do.
    /// With `strict` false, only monotonicity is required: means closer than
    /// an ulp of the price may compare equal as `f64`.
    fn check_sma_order(seed: u64, ticks: &[i64], periods: (usize, usize), strict: bool) -> usize {
        let (na, nb) = periods;
        let (mut a, mut b) = (Sma::new(na), Sma::new(nb));
        let mut ties = 0;
        for (t, x) in prices(ticks).into_iter().enumerate() {
            let (Some(va), Some(vb)) = (a.update(x), b.update(x)) else {
                continue;
            };
            let sa: i128 = ticks[t + 1 - na..=t].iter().map(|&k| i128::from(k)).sum();
            let sb: i128 = ticks[t + 1 - nb..=t].iter().map(|&k| i128::from(k)).sum();
            // sa / na versus sb / nb, in integers.
            let exact = (sa * nb as i128).cmp(&(sb * na as i128));
            ties += usize::from(exact.is_eq());
            let got = va.partial_cmp(&vb).unwrap();
            assert!(
                got == exact || (!strict && got.is_eq()),
                "seed {seed}, Sma({na}) = {va} vs Sma({nb}) = {vb} at step {t}: \
                 {got:?}, exact {exact:?}"
            );
        }
        ties
    }

    #[test]
    fn sma_comparisons_follow_exact_decimal_means() {
        let mut ties = 0;
        for (seed, periods) in [(1, (2, 4)), (2, (3, 6)), (3, (2, 3)), (4, (5, 7)), (5, (10, 20))] {
            // Narrow prices around 1.0000 so that equal means are common.
            let mut rng = Rng(seed);
            let ticks: Vec<i64> = (0..20_000).map(|_| rng.range(10_000, 10_012)).collect();
            ties += check_sma_order(seed, &ticks, periods, true);
            // A random walk at a typical price.
            ties += check_sma_order(seed, &walk(seed, 20_000, 1_012_345, 3), periods, true);
        }
        assert!(ties > 1_000, "only {ties} ties: the test does not exercise them");
        // Large prices and windows, where the sums exceed 2^63.
        check_sma_order(6, &walk(6, 12_000, 200_000_000_000, 2), (5_000, 4_999), false);
    }

    #[test]
    fn sma_ties_hold_for_large_sums() {
        // Alternating a, b: every even window has mean (a + b) / 2, whatever
        // its length, including sums above 2^53 and 2^63 (in 1e-8 units).
        for (a, b, long) in [
            (100000.1234, 100000.1235, 1_000),
            (20000000.1234, 20000000.1237, 10_000),
            (-12.5, 12.5001, 64),
        ] {
            let mut smas = [Sma::new(2), Sma::new(long / 2), Sma::new(long)];
            let mut values = [None; 3];
            for i in 0..long {
                let x = if i % 2 == 0 { a } else { b };
                for (sma, v) in smas.iter_mut().zip(&mut values) {
                    *v = sma.update(x);
                }
            }
            assert_eq!(values[0], values[1], "a = {a}, b = {b}, n = {long}");
            assert_eq!(values[0], values[2], "a = {a}, b = {b}, n = {long}");
        }
    }

    // -- SmaPair ------------------------------------------------------------

    /// A pair agrees bit for bit with two `Sma`s fed the same values.
    fn check_pair_against_smas(input: &[f64], fast: usize, slow: usize, scale: u64) {
        let mut pair = SmaPair::with_scale(fast, slow, scale);
        let (mut a, mut b) = (Sma::with_scale(fast, scale), Sma::with_scale(slow, scale));
        for (t, &x) in input.iter().enumerate() {
            pair.push(x);
            a.push(x);
            b.push(x);
            let what = || format!("SmaPair({fast}, {slow}) at step {t}, input {x}");
            assert_eq!(pair.compare(), a.compare(&b), "{}", what());
            assert_eq!(
                pair.fast().map(f64::to_bits),
                a.value().map(f64::to_bits),
                "{}",
                what()
            );
            assert_eq!(
                pair.slow().map(f64::to_bits),
                b.value().map(f64::to_bits),
                "{}",
                what()
            );
            assert_eq!(pair.is_ready(), a.is_ready() && b.is_ready(), "{}", what());
        }
    }

    #[test]
    fn sma_pair_agrees_with_two_smas() {
        let mut rng = Rng(21);
        // Narrow prices (many ties), with NaN, infinite and out-of-range
        // values now and then.
        let narrow: Vec<f64> = (0..6_000)
            .map(|_| match rng.range(0, 200) {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => 1e12,
                _ => rng.range(10_000, 10_012) as f64 / 1e4,
            })
            .collect();
        let walk_prices = prices(&walk(21, 6_000, 1_012_345, 3));
        for (fast, slow) in [(1, 1), (1, 2), (2, 1), (3, 7), (7, 3), (10, 30), (5, 5), (64, 1)] {
            check_pair_against_smas(&narrow, fast, slow, DEFAULT_SCALE);
            check_pair_against_smas(&walk_prices, fast, slow, DEFAULT_SCALE);
            check_pair_against_smas(&walk_prices, fast, slow, 100);
        }
        // Sums beyond 2^63, and windows at and beyond the i64 fast path's
        // length limit (1,024).
        let large = prices(&walk(22, 6_000, 200_000_000_000, 2));
        check_pair_against_smas(&large, 2_000, 1_999, DEFAULT_SCALE);
        check_pair_against_smas(&large, 3, 1_500, DEFAULT_SCALE);
        for (fast, slow) in [(1_023, 1_024), (1_024, 1_023), (1, 1_024), (1_023, 1_023)] {
            check_pair_against_smas(&walk_prices, fast, slow, DEFAULT_SCALE);
            check_pair_against_smas(&large, fast, slow, DEFAULT_SCALE);
        }
    }

    #[test]
    fn sma_pair_after_reset_agrees_with_fresh_smas() {
        let input = prices(&walk(23, 3_000, 1_012_345, 3));
        let mut pair = SmaPair::new(4, 9);
        for (t, &x) in input.iter().enumerate() {
            if t % 701 == 700 {
                pair.reset();
                // Compare from here on with two fresh Smas.
                let (mut a, mut b) = (Sma::new(4), Sma::new(9));
                for &y in &input[t..] {
                    pair.push(y);
                    a.push(y);
                    b.push(y);
                    assert_eq!(pair.compare(), a.compare(&b), "after a reset at step {t}");
                    assert_eq!(pair.fast(), a.value());
                    assert_eq!(pair.slow(), b.value());
                }
                return;
            }
            pair.push(x);
        }
        unreachable!("the input is longer than 700 values");
    }

    #[test]
    fn sma_pair_reset_starts_over() {
        let mut pair = SmaPair::new(2, 3);
        for x in [1.0, 2.0, 3.0, 4.0] {
            pair.push(x);
        }
        assert_eq!((pair.fast(), pair.slow()), (Some(3.5), Some(3.0)));
        pair.reset();
        assert_eq!((pair.fast(), pair.slow(), pair.compare()), (None, None, None));
        for x in [5.0, 6.0] {
            pair.push(x);
        }
        assert_eq!((pair.fast(), pair.slow()), (Some(5.5), None));
        assert_eq!(pair.periods(), (2, 3));
        assert_eq!(pair.scale(), DEFAULT_SCALE);
    }

    #[test]
    #[should_panic(expected = "sma pair slow period must be at least 1")]
    fn sma_pair_rejects_period_zero() {
        SmaPair::new(3, 0);
    }

    // -- Ema ----------------------------------------------------------------

    fn check_ema(period: usize, input: &[f64], expected: &[Option<f64>]) {
        let mut ema = Ema::new(period);
        let got: Vec<_> = input.iter().map(|&x| ema.update(x)).collect();
        assert_close_seq(&format!("Ema({period}) of {input:?}"), &got, expected);
        assert_eq!(ema.value(), got.last().copied().flatten());
    }

    #[test]
    fn ema_small_cases() {
        // alpha = 0.5, seed = mean(1, 2, 3) = 2.
        check_ema(
            3,
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            &[None, None, Some(2.0), Some(3.0), Some(4.0)],
        );
        check_ema(1, &[5.0, 7.0, -1.0], &[Some(5.0), Some(7.0), Some(-1.0)]);
        // alpha = 2/3, seed = 3; 3 + 2/3 · (6 - 3) = 5; 5 + 2/3 · (2 - 5) = 3.
        check_ema(2, &[2.0, 4.0, 6.0, 2.0], &[None, Some(3.0), Some(5.0), Some(3.0)]);
        assert_eq!(Ema::new(4).alpha(), 0.4);
    }

    /// Each EMA value recomputed from the whole history in closed form:
    /// `EMA_t = (1-a)^(t-n+1) · seed + Σ_{j=n}^{t} a (1-a)^(t-j) x_j`.
    fn check_ema_reference(period: usize, xs: &[f64]) {
        let alpha = 2.0 / (period as f64 + 1.0);
        let mut ema = Ema::new(period);
        for (t, &x) in xs.iter().enumerate() {
            let got = ema.update(x);
            if t + 1 < period {
                assert_eq!(got, None);
                continue;
            }
            let seed = xs[..period].iter().sum::<f64>() / period as f64;
            let mut want = (1.0 - alpha).powi((t + 1 - period) as i32) * seed;
            for (j, &xj) in xs.iter().enumerate().take(t + 1).skip(period) {
                want += alpha * (1.0 - alpha).powi((t - j) as i32) * xj;
            }
            let got = got.unwrap();
            assert!(
                close(got, want, 1e-10, 0.0),
                "Ema({period}) at {t}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn ema_matches_reference() {
        for (seed, period) in [(1, 1), (2, 2), (3, 5), (4, 30)] {
            check_ema_reference(period, &prices(&walk(seed, 400, 1_000_000, 500)));
        }
        // Long series: the recursion is stable, compare with another form of it.
        let xs = prices(&walk(5, 100_000, 1_000_000, 500));
        let (period, alpha) = (20, 2.0 / 21.0);
        let mut ema = Ema::new(period);
        let mut want = xs[..period].iter().sum::<f64>() / period as f64;
        for (t, &x) in xs.iter().enumerate() {
            let got = ema.update(x);
            if t >= period {
                want = alpha * x + (1.0 - alpha) * want;
            }
            if t + 1 >= period {
                assert!(close(got.unwrap(), want, 1e-12, 0.0), "Ema at {t}");
            }
        }
    }

    // -- Rsi ----------------------------------------------------------------

    fn check_rsi(period: usize, input: &[f64], expected: &[Option<f64>]) {
        let mut rsi = Rsi::new(period);
        let got: Vec<_> = input.iter().map(|&x| rsi.update(x)).collect();
        assert_close_seq(&format!("Rsi({period}) of {input:?}"), &got, expected);
        assert_eq!(rsi.value(), got.last().copied().flatten());
    }

    #[test]
    fn rsi_small_cases() {
        let up = [1.0, 2.0, 3.0, 4.0, 5.0];
        check_rsi(3, &up, &[None, None, None, Some(100.0), Some(100.0)]);
        let down = [5.0, 4.0, 3.0, 2.0, 1.0];
        check_rsi(3, &down, &[None, None, None, Some(0.0), Some(0.0)]);
        check_rsi(2, &[7.0, 7.0, 7.0, 7.0], &[None, None, Some(50.0), Some(50.0)]);
        // Changes +1, -0.5, +1: G = 0.5, L = 0.25 → 66.67; then
        // G = (0.5 + 1) / 2 = 0.75, L = (0.25 + 0) / 2 = 0.125 → 85.71.
        check_rsi(
            2,
            &[1.0, 2.0, 1.5, 2.5],
            &[None, None, Some(200.0 / 3.0), Some(600.0 / 7.0)],
        );
        check_rsi(
            1,
            &[1.0, 2.0, 1.0, 1.0],
            &[None, Some(100.0), Some(0.0), Some(50.0)],
        );
        assert_eq!(Rsi::new(14).period(), 14);
    }

    /// Textbook Wilder RSI, written independently: `100 - 100 / (1 + RS)`.
    fn rsi_reference(period: usize, xs: &[f64]) -> Vec<Option<f64>> {
        let n = period as f64;
        let (mut g, mut l) = (0.0, 0.0);
        let mut out = Vec::new();
        for t in 0..xs.len() {
            if t == 0 {
                out.push(None);
                continue;
            }
            let d = xs[t] - xs[t - 1];
            let (gain, loss) = (d.max(0.0), (-d).max(0.0));
            if t <= period {
                g += gain / n;
                l += loss / n;
            } else {
                g = (g * (n - 1.0) + gain) / n;
                l = (l * (n - 1.0) + loss) / n;
            }
            out.push((t >= period).then(|| {
                if l == 0.0 {
                    if g == 0.0 {
                        50.0
                    } else {
                        100.0
                    }
                } else {
                    100.0 - 100.0 / (1.0 + g / l)
                }
            }));
        }
        out
    }

    #[test]
    fn rsi_matches_reference() {
        for (seed, period, len) in [(1, 1, 1_000), (2, 2, 1_000), (3, 14, 1_000), (4, 14, 100_000)] {
            let xs = prices(&walk(seed, len, 1_000_000, 400));
            let mut rsi = Rsi::new(period);
            for (t, (&x, want)) in xs.iter().zip(rsi_reference(period, &xs)).enumerate() {
                let got = rsi.update(x);
                let ok = match (got, want) {
                    (None, None) => true,
                    (Some(g), Some(w)) => (g - w).abs() <= 1e-9 && (0.0..=100.0).contains(&g),
                    _ => false,
                };
                assert!(ok, "Rsi({period}) at {t}: got {got:?}, reference {want:?}");
            }
        }
    }

    // -- Atr ----------------------------------------------------------------

    fn check_atr(period: usize, input: &[(f64, f64, f64)], expected: &[Option<f64>]) {
        let mut atr = Atr::new(period);
        let got: Vec<_> = input.iter().map(|&(h, l, c)| atr.update(h, l, c)).collect();
        assert_close_seq(&format!("Atr({period}) of {input:?}"), &got, expected);
        assert_eq!(atr.value(), got.last().copied().flatten());
    }

    #[test]
    fn atr_small_cases() {
        // TRs: 2 (first bar: high - low), max(2, 2, 0) = 2, max(3, 2, 1) = 3,
        // max(1, 0, 1) = 1, then a gap up: max(1, 9.5, 8.5) = 9.5.
        let bars = [
            (10.0, 8.0, 9.0),
            (11.0, 9.0, 10.0),
            (12.0, 9.0, 11.0),
            (11.0, 10.0, 10.5),
            (20.0, 19.0, 19.5),
        ];
        let atr3 = 7.0 / 3.0;
        let atr4 = (atr3 * 2.0 + 1.0) / 3.0;
        let atr5 = (atr4 * 2.0 + 9.5) / 3.0;
        check_atr(3, &bars, &[None, None, Some(atr3), Some(atr4), Some(atr5)]);
        // Period 1: the true range itself, including a gap down.
        let bars = [(10.0, 8.0, 9.0), (9.5, 9.0, 9.2), (5.0, 4.0, 4.5)];
        check_atr(1, &bars, &[Some(2.0), Some(0.5), Some(5.2)]);
        assert_eq!(Atr::new(14).period(), 14);
    }

    #[test]
    fn atr_matches_reference() {
        for (seed, period, len) in [(1, 1, 1_000), (2, 3, 1_000), (3, 14, 100_000)] {
            let bars = bars(seed, len);
            let n = period as f64;
            let mut atr = Atr::new(period);
            let mut want = 0.0;
            for (t, &(h, l, c)) in bars.iter().enumerate() {
                let tr = if t == 0 {
                    h - l
                } else {
                    let pc = bars[t - 1].2;
                    (h - l).max((h - pc).abs()).max((l - pc).abs())
                };
                if t < period {
                    want += tr / n;
                } else {
                    want = (want * (n - 1.0) + tr) / n;
                }
                let got = atr.update(h, l, c);
                if t + 1 < period {
                    assert_eq!(got, None);
                } else {
                    assert!(close(got.unwrap(), want, 1e-10, 0.0), "Atr({period}) at {t}");
                }
            }
        }
    }

    // -- Bollinger ----------------------------------------------------------

    fn check_bollinger(period: usize, k: f64, input: &[f64], expected: &[Option<(f64, f64)>]) {
        let mut bb = Bollinger::new(period, k);
        for (i, (&x, want)) in input.iter().zip(expected).enumerate() {
            let got = bb.update(x);
            let ok = match (got, want) {
                (None, None) => true,
                (Some(b), Some((middle, stddev))) => {
                    close(b.middle, *middle, 1e-15, 0.0)
                        && close(b.stddev, *stddev, 1e-15, 0.0)
                        && b.upper == b.middle + k * b.stddev
                        && b.lower == b.middle - k * b.stddev
                }
                _ => false,
            };
            assert!(
                ok,
                "Bollinger({period}, {k}) of {input:?} at {i}: {got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn bollinger_small_cases() {
        let s = 1.25f64.sqrt();
        check_bollinger(
            4,
            2.0,
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            &[None, None, None, Some((2.5, s)), Some((3.5, s))],
        );
        // A constant window has a standard deviation of exactly 0.
        check_bollinger(
            3,
            2.0,
            &[101.2345; 5],
            &[
                None,
                None,
                Some((101.2345, 0.0)),
                Some((101.2345, 0.0)),
                Some((101.2345, 0.0)),
            ],
        );
        check_bollinger(1, 2.0, &[3.0, -7.25], &[Some((3.0, 0.0)), Some((-7.25, 0.0))]);
        // Population deviation of (1.1, 1.3) is 0.1.
        check_bollinger(2, 1.0, &[1.1, 1.3], &[None, Some((1.2, 0.1))]);
        let bb = Bollinger::new(20, 2.5);
        assert_eq!((bb.period(), bb.k(), bb.scale()), (20, 2.5, DEFAULT_SCALE));
    }

    /// Over 4-decimal prices: the middle band is bit-identical to `Sma`, and
    /// the deviation matches the exact integer formula converted once.
    fn check_bollinger_exact(period: usize, ticks: &[i64]) {
        let mut bb = Bollinger::new(period, 2.0);
        let mut sma = Sma::new(period);
        for (t, x) in prices(ticks).into_iter().enumerate() {
            let (got, middle) = (bb.update(x), sma.update(x));
            assert_eq!(got.map(|b| b.middle), middle, "Bollinger({period}) middle at {t}");
            let Some(got) = got else { continue };
            let window = &ticks[t + 1 - period..=t];
            let s: i128 = window.iter().map(|&k| i128::from(k)).sum();
            let ss: i128 = window.iter().map(|&k| i128::from(k) * i128::from(k)).sum();
            let numerator = period as i128 * ss - s * s;
            let want = (numerator as f64).sqrt() / (period as f64 * 1e4);
            assert!(
                close(got.stddev, want, 1e-13, 0.0),
                "Bollinger({period}) stddev at {t}: {} vs {want}",
                got.stddev
            );
        }
    }

    #[test]
    fn bollinger_matches_exact_reference() {
        for (seed, period) in [(1, 1), (2, 2), (3, 20), (4, 100)] {
            check_bollinger_exact(period, &walk(seed, 5_000, 1_000_000, 300));
        }
        check_bollinger_exact(20, &walk(5, 100_000, 1_000_000, 300));
        // Flat stretches: the deviation must reach exactly 0 again.
        let mut rng = Rng(6);
        let ticks: Vec<i64> = (0..5_000)
            .map(|_| 10_000 + rng.range(0, 1) * rng.range(0, 1))
            .collect();
        check_bollinger_exact(5, &ticks);
        check_bollinger_exact(500, &walk(7, 3_000, 200_000_000_000, 5_000));
    }

    #[test]
    fn bollinger_of_arbitrary_reals_matches_two_pass_reference() {
        let xs = reals(8, 20_000, 50.0, 10.0);
        let period = 30;
        let mut bb = Bollinger::new(period, 2.0);
        for (t, &x) in xs.iter().enumerate() {
            let Some(got) = bb.update(x) else { continue };
            let window = &xs[t + 1 - period..=t];
            let mean = window.iter().sum::<f64>() / period as f64;
            let var = window.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / period as f64;
            assert!(close(got.middle, mean, 1e-12, 1e-8), "middle at {t}");
            assert!(close(got.stddev, var.sqrt(), 1e-9, 1e-8), "stddev at {t}");
        }
    }

    #[test]
    fn bollinger_handles_the_extremes_of_its_range() {
        // The largest period with the largest quantizable prices: the exact
        // numerator exceeds 128 bits and the last step falls back to f64.
        let a = 45_000_000.0;
        let mut bb = Bollinger::new(Bollinger::MAX_PERIOD, 1.0);
        let mut last = None;
        for i in 0..Bollinger::MAX_PERIOD + 3 {
            last = bb.update(if i % 2 == 0 { a } else { -a });
        }
        let last = last.unwrap();
        assert!(close(last.stddev, a, 1e-12, 0.0), "{last:?}");
        assert_eq!(last.middle, 0.0, "{last:?}");
    }

    // -- Donchian -----------------------------------------------------------

    fn check_donchian(period: usize, input: &[(f64, f64)], expected: &[Option<(f64, f64)>]) {
        let mut dc = Donchian::new(period);
        let got: Vec<_> = input
            .iter()
            .map(|&(h, l)| dc.update(h, l).map(|c| (c.upper, c.lower, c.middle)))
            .collect();
        let want: Vec<_> = expected
            .iter()
            .map(|e| e.map(|(u, l)| (u, l, (u + l) / 2.0)))
            .collect();
        assert_eq!(got, want, "Donchian({period}) of {input:?}");
    }

    #[test]
    fn donchian_small_cases() {
        let bars = [
            (5.0, 1.0),
            (6.0, 2.0),
            (4.0, 0.0),
            (3.0, 1.0),
            (2.0, 2.0),
            (1.0, 0.5),
        ];
        check_donchian(
            3,
            &bars,
            &[
                None,
                None,
                Some((6.0, 0.0)),
                Some((6.0, 0.0)),
                Some((4.0, 0.0)),
                Some((3.0, 0.5)),
            ],
        );
        let bars = [(1.0, 0.0), (1.0, 0.0), (1.0, 0.0), (0.5, 0.25)];
        check_donchian(
            2,
            &bars,
            &[None, Some((1.0, 0.0)), Some((1.0, 0.0)), Some((1.0, 0.0))],
        );
        check_donchian(
            1,
            &[(3.0, 1.0), (2.0, 1.5)],
            &[Some((3.0, 1.0)), Some((2.0, 1.5))],
        );
    }

    #[test]
    fn donchian_matches_window_max_and_min() {
        for (seed, period) in [(1, 1), (2, 2), (3, 3), (4, 10), (5, 100)] {
            // Small steps give many equal highs and lows.
            let mut bars = bars(seed, 20_000);
            let mut rng = Rng(seed);
            for bar in bars.iter_mut().filter(|_| rng.range(0, 3) == 0) {
                bar.0 = 100.0;
            }
            let mut dc = Donchian::new(period);
            for (t, &(h, l, _)) in bars.iter().enumerate() {
                let got = dc.update(h, l);
                if t + 1 < period {
                    assert_eq!(got, None);
                    continue;
                }
                let window = &bars[t + 1 - period..=t];
                let upper = window.iter().map(|b| b.0).fold(f64::NEG_INFINITY, f64::max);
                let lower = window.iter().map(|b| b.1).fold(f64::INFINITY, f64::min);
                let want = DonchianChannel {
                    upper,
                    lower,
                    middle: 0.5 * upper + 0.5 * lower,
                };
                assert_eq!(got, Some(want), "Donchian({period}) at {t}");
            }
            assert!(dc.highs.len() <= period && dc.lows.len() <= period);
        }
    }

    // -- RollingStats -------------------------------------------------------

    fn check_stats(period: usize, input: &[f64], expected: &[Option<(f64, f64)>]) {
        let mut rs = RollingStats::new(period);
        for (i, (&x, want)) in input.iter().zip(expected).enumerate() {
            let got = rs.update(x);
            let ok = match (got, want) {
                (None, None) => true,
                (Some(s), Some((mean, var))) => {
                    close(s.mean, *mean, 1e-14, 0.0)
                        && close(s.variance, *var, 1e-14, 0.0)
                        && s.stddev == s.variance.sqrt()
                }
                _ => false,
            };
            assert!(
                ok,
                "RollingStats({period}) of {input:?} at {i}: {got:?} vs {want:?}"
            );
        }
        assert_eq!(rs.mean(), rs.value().map(|s| s.mean));
        assert_eq!(rs.variance(), rs.value().map(|s| s.variance));
        assert_eq!(rs.stddev(), rs.value().map(|s| s.stddev));
    }

    #[test]
    fn rolling_stats_small_cases() {
        check_stats(
            4,
            &[1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0],
            &[
                None,
                None,
                None,
                Some((2.5, 5.0 / 3.0)),
                Some((3.5, 5.0 / 3.0)),
                Some((4.25, 2.75 / 3.0)),
                Some((4.75, 0.25)),
                Some((5.0, 0.0)),
            ],
        );
        check_stats(2, &[1.0, 3.0, -3.0], &[None, Some((2.0, 2.0)), Some((0.0, 18.0))]);
        assert_eq!(RollingStats::new(9).period(), 9);
    }

    /// The variance may be off by `tol` times the variance of the whole
    /// series (see the error bound in the docs of `RollingStats`), the mean by
    /// `1e-12` times the largest magnitude.
    fn check_stats_reference(period: usize, xs: &[f64], tol: f64) {
        let overall_mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let overall_var = xs
            .iter()
            .map(|x| (x - overall_mean) * (x - overall_mean))
            .sum::<f64>()
            / xs.len() as f64;
        let max_abs = xs.iter().fold(0.0, |m: f64, x| m.max(x.abs()));
        let mut rs = RollingStats::new(period);
        for (t, &x) in xs.iter().enumerate() {
            let got = rs.update(x);
            if t + 1 < period {
                assert_eq!(got, None);
                continue;
            }
            let window = &xs[t + 1 - period..=t];
            let mean = window.iter().sum::<f64>() / period as f64;
            let var = window.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (period - 1) as f64;
            let got = got.unwrap();
            assert!(
                close(got.mean, mean, 0.0, 1e-12 * max_abs),
                "mean at {t}: {} vs {mean}",
                got.mean
            );
            assert!(
                close(got.variance, var, 0.0, tol * overall_var),
                "RollingStats({period}) variance at {t}: {} vs {var}",
                got.variance
            );
        }
    }

    #[test]
    fn rolling_stats_match_two_pass_reference() {
        for (seed, period) in [(1, 2), (2, 3), (3, 20), (4, 250)] {
            check_stats_reference(period, &reals(seed, 20_000, 0.0, 0.05), 1e-13);
        }
        // Long series with a large offset and a tiny spread, the hard case for
        // running sums: recomputation every window keeps the error bounded.
        check_stats_reference(50, &reals(5, 100_000, 1e6, 1e-2), 1e-6);
        check_stats_reference(7, &prices(&walk(6, 100_000, 1_000_000, 500)), 1e-10);
    }

    // -- Edge cases common to all ------------------------------------------

    #[test]
    fn warm_up_returns_none_until_ready() {
        let (mut sma, mut ema, mut rsi, mut atr) = (Sma::new(5), Ema::new(5), Rsi::new(5), Atr::new(5));
        let (mut bb, mut dc, mut rs) = (Bollinger::new(5, 2.0), Donchian::new(5), RollingStats::new(5));
        for i in 0..5 {
            let x = 100.0 + i as f64;
            let ready = i == 4;
            assert_eq!(sma.update(x).is_some(), ready);
            assert_eq!(ema.update(x).is_some(), ready);
            assert_eq!(atr.update(x + 1.0, x - 1.0, x).is_some(), ready);
            assert_eq!(bb.update(x).is_some(), ready);
            assert_eq!(dc.update(x + 1.0, x - 1.0).is_some(), ready);
            assert_eq!(rs.update(x).is_some(), ready);
            // Rsi needs one more value: period changes.
            assert!(rsi.update(x).is_none());
            let readiness = [
                sma.is_ready(),
                ema.is_ready(),
                atr.is_ready(),
                bb.is_ready(),
                dc.is_ready(),
                rs.is_ready(),
            ];
            assert_eq!(readiness, [ready; 6], "after {} values", i + 1);
            assert_eq!(sma.value().is_some(), ready);
            assert_eq!(bb.value().is_some(), ready);
            assert_eq!(dc.value().is_some(), ready);
        }
        assert!(!rsi.is_ready());
        // Changes +1, +1, +1, +1, -5: G = 0.8, L = 1.
        assert_eq!(rsi.update(99.0), Some(100.0 * 0.8 / 1.8));
        assert!(rsi.is_ready());
    }

    #[test]
    fn reset_starts_over() {
        let xs = prices(&walk(1, 50, 1_000_000, 500));
        let mut sma = Sma::new(4);
        let mut ema = Ema::new(4);
        let mut rsi = Rsi::new(4);
        let mut atr = Atr::new(4);
        let mut bb = Bollinger::new(4, 2.0);
        let mut dc = Donchian::new(4);
        let mut rs = RollingStats::new(4);
        let mut run = |first: bool| {
            if !first {
                sma.reset();
                ema.reset();
                rsi.reset();
                atr.reset();
                bb.reset();
                dc.reset();
                rs.reset();
            }
            let mut out = Vec::new();
            for &x in &xs {
                out.push(format!(
                    "{:?}",
                    (
                        sma.update(x),
                        ema.update(x),
                        rsi.update(x),
                        atr.update(x + 0.5, x - 0.5, x),
                        bb.update(x),
                        dc.update(x + 0.5, x - 0.5),
                        rs.update(x),
                    )
                ));
            }
            out
        };
        let first = run(true);
        assert_eq!(first, run(false));
    }

    #[test]
    fn windowed_indicators_recover_after_nan() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut sma = Sma::new(3);
            let got: Vec<_> = [1.0, bad, 2.0, 3.0, 4.0].iter().map(|&x| sma.update(x)).collect();
            assert_eq!(got[..2], [None, None]);
            assert!(got[2].unwrap().is_nan() && got[3].unwrap().is_nan());
            assert_eq!(got[4], Some(3.0));

            let mut bb = Bollinger::new(3, 2.0);
            let got: Vec<_> = [1.0, bad, 2.0, 3.0, 4.0].iter().map(|&x| bb.update(x)).collect();
            assert!(got[3].unwrap().middle.is_nan() && got[3].unwrap().stddev.is_nan());
            assert_eq!(got[4].unwrap().middle, 3.0);
            assert!(close(got[4].unwrap().stddev, (2.0f64 / 3.0).sqrt(), 1e-15, 0.0));

            let mut rs = RollingStats::new(3);
            let got: Vec<_> = [1.0, bad, 2.0, 3.0, 4.0].iter().map(|&x| rs.update(x)).collect();
            assert!(got[3].unwrap().mean.is_nan() && got[3].unwrap().variance.is_nan());
            assert_eq!(
                got[4],
                Some(WindowStats {
                    mean: 3.0,
                    variance: 1.0,
                    stddev: 1.0
                })
            );
        }
        // A NaN high spoils only the upper side, for as long as it is in the window.
        let mut dc = Donchian::new(2);
        let got: Vec<_> = [
            (5.0, 1.0),
            (f64::NAN, 2.0),
            (4.0, 3.0),
            (3.0, f64::NAN),
            (2.0, 1.0),
        ]
        .iter()
        .map(|&(h, l)| dc.update(h, l))
        .collect();
        assert_eq!(got[0], None);
        let c = got[1].unwrap();
        assert!(c.upper.is_nan() && c.lower == 1.0 && c.middle.is_nan());
        let c = got[2].unwrap();
        assert!(c.upper.is_nan() && c.lower == 2.0);
        let c = got[3].unwrap();
        assert!(c.upper == 4.0 && c.lower.is_nan());
        let c = got[4].unwrap();
        assert!(c.upper == 3.0 && c.lower.is_nan());
        assert_eq!(
            dc.update(2.0, 1.5),
            Some(DonchianChannel {
                upper: 2.0,
                lower: 1.0,
                middle: 1.5
            })
        );
    }

    #[test]
    fn recursive_indicators_keep_nan_until_reset() {
        let mut ema = Ema::new(2);
        ema.update(1.0);
        assert!(ema.update(f64::NAN).unwrap().is_nan());
        assert!(ema.update(2.0).unwrap().is_nan());
        ema.reset();
        ema.update(1.0);
        assert_eq!(ema.update(2.0), Some(1.5));

        let mut rsi = Rsi::new(1);
        rsi.update(1.0);
        assert!(rsi.update(f64::NAN).unwrap().is_nan());
        assert!(rsi.update(2.0).unwrap().is_nan());

        let mut atr = Atr::new(1);
        assert!(atr.update(f64::NAN, 1.0, 1.0).unwrap().is_nan());
        assert!(atr.update(2.0, 1.0, 1.0).unwrap().is_nan());
        let mut atr = Atr::new(1);
        atr.update(2.0, 1.0, f64::NAN);
        // The previous close is NaN: the true range is NaN, not high - low.
        assert!(atr.update(2.0, 1.0, 1.5).unwrap().is_nan());
    }

    #[test]
    fn arbitrary_inputs_never_panic_and_windows_recover() {
        let mut rng = Rng(99);
        let mut sma = Sma::new(3);
        let mut ema = Ema::new(3);
        let mut rsi = Rsi::new(3);
        let mut atr = Atr::new(3);
        let mut bb = Bollinger::new(3, 2.0);
        let mut dc = Donchian::new(3);
        let mut rs = RollingStats::new(3);
        let specials = [
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
            f64::MAX,
            -f64::MAX,
            -0.0,
            5e-324,
        ];
        for _ in 0..20_000 {
            let mut draw = || match rng.range(0, 2) {
                0 => f64::from_bits(rng.next_u64()),
                1 => specials[rng.range(0, specials.len() as i64 - 1) as usize],
                _ => rng.unit() * 100.0,
            };
            let (x, y, z) = (draw(), draw(), draw());
            sma.update(x);
            ema.update(x);
            rsi.update(x);
            atr.update(x, y, z);
            bb.update(x);
            dc.update(x, y);
            rs.update(x);
        }
        // Windowed indicators are whole again once the window (and, for
        // RollingStats, its next recomputation) has passed.
        for i in 0..6 {
            let x = 10.0 + i as f64;
            sma.update(x);
            bb.update(x);
            dc.update(x + 1.0, x - 1.0);
            rs.update(x);
        }
        assert_eq!(sma.value(), Some(14.0));
        assert_eq!(bb.value().map(|b| b.middle), Some(14.0));
        assert_eq!(
            dc.value(),
            Some(DonchianChannel {
                upper: 16.0,
                lower: 12.0,
                middle: 14.0
            })
        );
        assert_eq!(
            rs.value(),
            Some(WindowStats {
                mean: 14.0,
                variance: 1.0,
                stddev: 1.0
            })
        );
    }

    #[test]
    #[should_panic(expected = "sma period must be at least 1")]
    fn sma_rejects_period_zero() {
        Sma::new(0);
    }

    #[test]
    #[should_panic(expected = "sma scale must be between 1 and 2^53")]
    fn sma_rejects_scale_zero() {
        Sma::with_scale(3, 0);
    }

    #[test]
    #[should_panic(expected = "ema period must be at least 1")]
    fn ema_rejects_period_zero() {
        Ema::new(0);
    }

    #[test]
    #[should_panic(expected = "rsi period must be at least 1")]
    fn rsi_rejects_period_zero() {
        Rsi::new(0);
    }

    #[test]
    #[should_panic(expected = "atr period must be at least 1")]
    fn atr_rejects_period_zero() {
        Atr::new(0);
    }

    #[test]
    #[should_panic(expected = "bollinger period must be at least 1")]
    fn bollinger_rejects_period_zero() {
        Bollinger::new(0, 2.0);
    }

    #[test]
    #[should_panic(expected = "bollinger period must be at most 2^20")]
    fn bollinger_rejects_huge_period() {
        Bollinger::new(Bollinger::MAX_PERIOD + 1, 2.0);
    }

    #[test]
    #[should_panic(expected = "donchian period must be at least 1")]
    fn donchian_rejects_period_zero() {
        Donchian::new(0);
    }

    #[test]
    #[should_panic(expected = "rolling stats period must be at least 2")]
    fn rolling_stats_rejects_period_one() {
        RollingStats::new(1);
    }

    #[test]
    fn compare_agrees_with_exact_rational_comparison() {
        use core::cmp::Ordering;
        let mut rng = 0x1234_5678_9ABC_DEF0u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut fast, mut slow) = (Sma::new(2), Sma::new(5));
        let mut window: std::vec::Vec<i64> = std::vec::Vec::new();
        let mut ties = 0;
        for _ in 0..20_000 {
            // Prices on a coarse 4-decimal grid so that ties happen.
            let ticks = 10_000 + (next() % 40) as i64;
            let x = ticks as f64 / 10_000.0;
            fast.push(x);
            slow.push(x);
            window.push(ticks);
            if window.len() < 5 {
                assert_eq!(fast.compare(&slow), None);
                continue;
            }
            let n = window.len();
            let sf: i64 = window[n - 2..].iter().sum();
            let ss: i64 = window[n - 5..].iter().sum();
            let want = (sf * 5).cmp(&(ss * 2));
            ties += usize::from(want == Ordering::Equal);
            assert_eq!(fast.compare(&slow), Some(want));
            assert_eq!(
                fast.value().partial_cmp(&slow.value()),
                Some(want),
                "value() orders like compare()"
            );
        }
        assert!(ties > 100, "the test should see ties, saw {ties}");
        let mut nan = Sma::new(2);
        nan.push(f64::NAN);
        nan.push(1.0);
        assert_eq!(nan.compare(&fast), None);
        assert_eq!(Sma::with_scale(2, 100).compare(&Sma::new(2)), None);
    }
}
