//! The host a strategy talks to: the ABI v2 imports on wasm32, or any
//! implementation of [`Host`] natively.

use palisade_host_api::{Bar, Fill};

/// Everything a strategy can ask of its host, mirroring the ABI v2 imports
/// one for one (see `palisade_host_api::imports` for the exact semantics).
/// Every call is about "now": the timestamp [`Host::next_bars`] last handed
/// over.
///
/// On wasm32 the SDK uses `WasmHost` (wasm32 only); natively, implement this
/// trait to run a strategy against your own engine, or use
/// [`crate::harness::MockHost`].
pub trait Host {
    /// The number of symbols in the data: the most bars one timestamp has.
    fn symbol_count(&mut self) -> usize;
    /// Writes the bars of the next timestamp into `buf` (which holds at least
    /// [`Host::symbol_count`] bars); returns how many (0 at the end).
    fn next_bars(&mut self, buf: &mut [Bar]) -> usize;
    /// Places an order; returns its id (>= 1) or a negative error code.
    fn order(&mut self, symbol: i32, qty: f64, kind: i32, price: f64) -> i64;
    /// Cancels a pending order; 0 or a negative error code.
    fn cancel(&mut self, id: i64) -> i32;
    /// Signed quantity held in `symbol` (NaN for an unknown symbol).
    fn position(&mut self, symbol: i32) -> f64;
    fn cash(&mut self) -> f64;
    fn equity(&mut self) -> f64;
    /// The oldest fill not yet delivered.
    fn poll_fill(&mut self) -> Option<Fill>;
    /// A declared parameter's value (an undeclared name stops the run).
    fn param(&mut self, name: &str) -> f64;
    /// Writes a symbol's name into `out`; returns its full length or a
    /// negative error code.
    fn symbol_name(&mut self, symbol: i32, out: &mut [u8]) -> i32;
    fn log(&mut self, level: i32, message: &str);
    fn random(&mut self) -> f64;
    fn metric(&mut self, name: &str, value: f64);
}

/// The wasm32 host: calls the `palisade` imports.
#[cfg(target_arch = "wasm32")]
#[derive(Debug, Default)]
pub struct WasmHost;

#[cfg(target_arch = "wasm32")]
pub(crate) mod ffi {
    #[link(wasm_import_module = "palisade")]
    extern "C" {
        pub fn symbol_count() -> i32;
        pub fn next_bars(buf: i32, cap: i32) -> i32;
        pub fn order(symbol: i32, qty: f64, kind: i32, price: f64) -> i64;
        pub fn cancel(id: i64) -> i32;
        pub fn position(symbol: i32) -> f64;
        pub fn cash() -> f64;
        pub fn equity() -> f64;
        pub fn poll_fill(out: i32) -> i32;
        pub fn param(name_ptr: i32, name_len: i32) -> f64;
        pub fn symbol_name(symbol: i32, out: i32, cap: i32) -> i32;
        pub fn log(level: i32, ptr: i32, len: i32);
        pub fn fail(kind: i32, ptr: i32, len: i32);
        pub fn random() -> f64;
        pub fn metric(name_ptr: i32, name_len: i32, value: f64);
    }
}

// SAFETY (for every `unsafe` block below): the imports are plain functions of
// scalars; pointers passed are to live, correctly sized guest buffers, and the
// host bounds-checks every pointer it receives anyway.
#[cfg(target_arch = "wasm32")]
impl Host for WasmHost {
    #[inline]
    fn symbol_count(&mut self) -> usize {
        unsafe { ffi::symbol_count() }.max(0) as usize
    }
    #[inline]
    fn next_bars(&mut self, buf: &mut [Bar]) -> usize {
        let n = unsafe { ffi::next_bars(buf.as_mut_ptr() as i32, buf.len() as i32) };
        (n.max(0) as usize).min(buf.len())
    }
    #[inline]
    fn order(&mut self, symbol: i32, qty: f64, kind: i32, price: f64) -> i64 {
        unsafe { ffi::order(symbol, qty, kind, price) }
    }
    #[inline]
    fn cancel(&mut self, id: i64) -> i32 {
        unsafe { ffi::cancel(id) }
    }
    #[inline]
    fn position(&mut self, symbol: i32) -> f64 {
        unsafe { ffi::position(symbol) }
    }
    #[inline]
    fn cash(&mut self) -> f64 {
        unsafe { ffi::cash() }
    }
    #[inline]
    fn equity(&mut self) -> f64 {
        unsafe { ffi::equity() }
    }
    #[inline]
    fn poll_fill(&mut self) -> Option<Fill> {
        let mut fill = Fill::default();
        let got = unsafe { ffi::poll_fill(&mut fill as *mut Fill as i32) };
        (got == 1).then_some(fill)
    }
    fn param(&mut self, name: &str) -> f64 {
        unsafe { ffi::param(name.as_ptr() as i32, name.len() as i32) }
    }
    fn symbol_name(&mut self, symbol: i32, out: &mut [u8]) -> i32 {
        unsafe { ffi::symbol_name(symbol, out.as_mut_ptr() as i32, out.len() as i32) }
    }
    fn log(&mut self, level: i32, message: &str) {
        unsafe { ffi::log(level, message.as_ptr() as i32, message.len() as i32) }
    }
    fn random(&mut self) -> f64 {
        unsafe { ffi::random() }
    }
    fn metric(&mut self, name: &str, value: f64) {
        unsafe { ffi::metric(name.as_ptr() as i32, name.len() as i32, value) }
    }
}

/// Reports a failure to the host; the host stops the run.
#[cfg(target_arch = "wasm32")]
pub(crate) fn fail(kind: i32, message: &str) -> ! {
    // SAFETY: see above; `fail` never returns to the guest.
    unsafe { ffi::fail(kind, message.as_ptr() as i32, message.len() as i32) };
    core::arch::wasm32::unreachable()
}
