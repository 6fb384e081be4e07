// `sma-cross-as`: the reference sma-cross strategy (guest-examples/sma-cross)
// written in AssemblyScript against ABI v2 directly, without an SDK. Built by
// scripts/build-assemblyscript.sh into guest-examples/out/sma_cross_as.wasm;
// tests/all/assemblyscript.rs checks that it trades exactly as the Rust one.
//
// Rule, per symbol, on every bar at which both averages of closes are defined
// now and on the previous bar: the fast SMA crosses above the slow one when
// fast > slow now and fast <= slow before; it crosses below when fast < slow
// now and fast >= slow before. On a cross above while flat, buy `size` at
// market; on a cross below while long, close the position at market.
//
// The averages are exact, as the Rust SDK's `SmaPair`: each close is rounded
// to the integer round(close * 1e8) (halves away from zero), the windows keep
// integer sums, and the two averages are compared in integers, so a tie is a
// tie. The sums are i64 where the Rust SDK's are i128: they are exact while a
// window's sum stays below 2^63 in magnitude, which any window shorter than
// 1024 bars always does, and longer windows do for closes up to about
// 9.2e10 / window length (1.8e7 for the largest `slow`, 5000).
//
// What it deliberately does not do: allocate. AssemblyScript's runtime adds a
// start function (which the sandbox refuses) and an `env.abort` import once
// a program allocates, so every buffer here is placed by hand in linear
// memory after the static data (`__heap_base`), grown with `memory.grow`
// once the parameters and the symbol count are known, and read and written
// with `load`/`store`. The manifest is not in this file: the build script
// appends it as the `palisade.manifest` custom section (manifest.json).

// ---------------------------------------------------------------------------
// ABI v2 (host-api/src/lib.rs): the imports this strategy uses.
// ---------------------------------------------------------------------------

@external("palisade", "next_bars")
declare function next_bars(buf: usize, cap: i32): i32;
@external("palisade", "symbol_count")
declare function symbol_count(): i32;
@external("palisade", "order")
declare function order(symbol: i32, qty: f64, kind: i32, price: f64): i64;
@external("palisade", "position")
declare function position(symbol: i32): f64;
@external("palisade", "poll_fill")
declare function poll_fill(out: usize): i32;
@external("palisade", "param")
declare function param(name_ptr: usize, name_len: i32): f64;
@external("palisade", "fail")
declare function fail(kind: i32, ptr: usize, len: i32): void;

const ORDER_MARKET: i32 = 0;
const FAIL_PANIC: i32 = 0;
const FAIL_INVALID_PARAMS: i32 = 1;
const FAIL_ERROR: i32 = 2;
const BAR_SIZE: usize = 56;
const BAR_SYMBOL: usize = 8;
const BAR_CLOSE: usize = 40;
const FILL_SIZE: usize = 48;

// ---------------------------------------------------------------------------
// Exact fixed-point windows (sdk/src/indicators.rs: quantize, WindowSum,
// SmaPair), with i64 sums.
// ---------------------------------------------------------------------------

const SCALE: f64 = 100000000.0;
/// A value that could not be quantized (NaN, infinite, beyond 2^53).
const INVALID: i64 = i64.MIN_VALUE;

/// round(x * 1e8), halves away from zero, read off the product's bits; INVALID
/// when x is NaN or infinite or the result would exceed 2^53 in magnitude.
function quantize(x: f64): i64 {
  const SIGN: u64 = 1 << 63;
  const FRACTION: u64 = (1 << 52) - 1;
  const MAX_BITS: u64 = (1023 + 53) << 52;
  const bits = reinterpret<u64>(x * SCALE);
  const magnitude = bits & ~SIGN;
  if (magnitude > MAX_BITS) return INVALID;
  const exponent = <i32>(magnitude >> 52);
  const significand = (magnitude & FRACTION) | (<u64>(exponent != 0) << 52);
  const shift = 1075 - max(exponent, 1);
  let rounded: u64;
  if (shift <= 0) {
    rounded = significand << <u64>(-shift);
  } else {
    const s = <u64>min(shift, 63);
    rounded = (significand + (<u64>1 << (s - 1))) >> s;
  }
  const negative = <i64>bits >> 63;
  return (<i64>rounded ^ negative) - negative;
}

// How the fast average compared with the slow one.
const NONE: i32 = 0;
const LESS: i32 = 1;
const EQUAL: i32 = 2;
const GREATER: i32 = 3;

function order3(x: i64, y: i64): i32 {
  return x < y ? LESS : x > y ? GREATER : EQUAL;
}

/// Compares the exact means sa / na and sb / nb (na, nb >= 1).
function compareMeans(sa: i64, na: i64, sb: i64, nb: i64): i32 {
  // As the Rust SDK: when both sums are below 2^53 and both lengths below
  // 2^10, the cross products fit in i64.
  const SMALL: u64 = 1 << 53;
  if (<u64>(sa + SMALL) < SMALL << 1 && <u64>(sb + SMALL) < SMALL << 1 && na < 1024 && nb < 1024) {
    return order3(sa * nb, sb * na);
  }
  // Otherwise by floor quotient, then remainders (each below its length, so
  // their cross products fit).
  let qa = sa / na, ra = sa % na;
  if (ra < 0) { qa -= 1; ra += na; }
  let qb = sb / nb, rb = sb % nb;
  if (rb < 0) { qb -= 1; rb += nb; }
  if (qa != qb) return order3(qa, qb);
  return order3(ra * nb, rb * na);
}

// One leg (a symbol's state) in linear memory: a header, then a ring of the
// last `ringLen` quantized closes (the oldest at `next` once full).
const LEG_FAST_SUM: usize = 0; // i64: sum of the valid values in the fast window
const LEG_SLOW_SUM: usize = 8; // i64: the same, slow window
const LEG_NEXT: usize = 16; // i32: ring slot the next value goes into
const LEG_SEEN: usize = 20; // i32: values seen, up to ringLen
const LEG_FAST_INVALID: usize = 24; // i32: INVALID values in the fast window
const LEG_SLOW_INVALID: usize = 28; // i32: the same, slow window
const LEG_PREV: usize = 32; // i32: fast vs slow on the previous bar (NONE, LESS, ...)
const LEG_HEADER: usize = 40;

// The run's settings and where things are (set by palisade_run; globals with
// constant initial values, so AssemblyScript emits no start function).
let fastLen: i32 = 0;
let slowLen: i32 = 0;
let ringLen: i32 = 0;
let size: f64 = 0;
let legs: usize = 0;
let legCount: i32 = 0;
let legStride: usize = 0;

/// Adds or removes q from a window's sum and invalid count.
function account(leg: usize, sumAt: usize, invalidAt: usize, q: i64, sign: i32): void {
  if (q == INVALID) {
    store<i32>(leg + invalidAt, load<i32>(leg + invalidAt) + sign);
  } else if (sign > 0) {
    store<i64>(leg + sumAt, load<i64>(leg + sumAt) + q);
  } else {
    store<i64>(leg + sumAt, load<i64>(leg + sumAt) - q);
  }
}

/// SmaPair::push: adds a close to both windows.
function push(leg: usize, close: f64): void {
  const q = quantize(close);
  const ring = leg + LEG_HEADER;
  const next = load<i32>(leg + LEG_NEXT);
  const seen = load<i32>(leg + LEG_SEEN);
  // A full window of n values drops the value pushed n values ago.
  if (seen >= fastLen) {
    let at = next + ringLen - fastLen;
    if (at >= ringLen) at -= ringLen;
    account(leg, LEG_FAST_SUM, LEG_FAST_INVALID, load<i64>(ring + (<usize>at << 3)), -1);
  }
  account(leg, LEG_FAST_SUM, LEG_FAST_INVALID, q, 1);
  if (seen >= slowLen) {
    let at = next + ringLen - slowLen;
    if (at >= ringLen) at -= ringLen;
    account(leg, LEG_SLOW_SUM, LEG_SLOW_INVALID, load<i64>(ring + (<usize>at << 3)), -1);
  }
  account(leg, LEG_SLOW_SUM, LEG_SLOW_INVALID, q, 1);
  store<i64>(ring + (<usize>next << 3), q);
  store<i32>(leg + LEG_NEXT, next + 1 == ringLen ? 0 : next + 1);
  if (seen < ringLen) store<i32>(leg + LEG_SEEN, seen + 1);
}

/// SmaPair::compare: NONE until both windows are full and while either holds
/// an INVALID value.
function compare(leg: usize): i32 {
  if (load<i32>(leg + LEG_SEEN) != ringLen) return NONE;
  if (load<i32>(leg + LEG_FAST_INVALID) > 0 || load<i32>(leg + LEG_SLOW_INVALID) > 0) return NONE;
  return compareMeans(load<i64>(leg + LEG_FAST_SUM), fastLen, load<i64>(leg + LEG_SLOW_SUM), slowLen);
}

// ---------------------------------------------------------------------------
// Messages: the host takes UTF-8, AssemblyScript strings are UTF-16. Text is
// assembled in a fixed buffer (no allocation), non-ASCII as '?'.
// ---------------------------------------------------------------------------

const TEXT_CAP: i32 = 512;
const text: usize = memory.data(512);
let textLen: i32 = 0;

function put(s: string): void {
  const n = s.length;
  for (let i = 0; i < n && textLen < TEXT_CAP; i++) {
    const c = load<u16>(changetype<usize>(s) + (<usize>i << 1));
    store<u8>(text + <usize>textLen, c < 128 ? <u8>c : 0x3f);
    textLen++;
  }
}

function putInt(v: i64): void {
  if (v < 0) {
    put("-");
    v = -v;
  }
  const digits = memory.data(20);
  let n = 0;
  do {
    store<u8>(digits + <usize>n, <u8>(48 + v % 10));
    v /= 10;
    n++;
  } while (v > 0);
  while (n > 0 && textLen < TEXT_CAP) {
    n--;
    store<u8>(text + <usize>textLen, load<u8>(digits + <usize>n));
    textLen++;
  }
}

/// Stops the run with the message in the text buffer. Never returns.
function stop(kind: i32): void {
  fail(kind, text, textLen);
  unreachable();
}

/// A declared parameter's value (the name must be ASCII).
function paramOf(name: string): f64 {
  textLen = 0;
  put(name);
  return param(text, textLen);
}

/// As the Rust SDK's `param_usize`: negative values (and NaN) read as 0.
function paramCount(name: string): i64 {
  const v = paramOf(name);
  return v >= 0 ? <i64>v : 0;
}

/// AssemblyScript's abort, which its own checks call (the build points
/// `--use abort=` here instead of importing `env.abort`): reported as a panic.
function palisadeAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  textLen = 0;
  put("abort: ");
  if (message !== null) put(message);
  if (file !== null) {
    put(" at ");
    put(file);
    put(":");
    putInt(line);
  }
  stop(FAIL_PANIC);
}

// ---------------------------------------------------------------------------
// The entry point.
// ---------------------------------------------------------------------------

export function palisade_run(): i32 {
  const fast = paramCount("fast");
  const slow = paramCount("slow");
  if (fast >= slow) {
    textLen = 0;
    put("fast (");
    putInt(fast);
    put(") must be less than slow (");
    putInt(slow);
    put(")");
    stop(FAIL_INVALID_PARAMS);
  }
  // The manifest caps both lengths far below 2^31; fast >= 1.
  fastLen = <i32>fast;
  slowLen = <i32>slow;
  ringLen = slowLen;
  size = paramOf("size");

  // Memory: the bar buffer, one fill record, then one leg per symbol.
  const symbols = max(symbol_count(), 1);
  const bars = (__heap_base + 7) & ~(<usize>7);
  const fill = bars + <usize>symbols * BAR_SIZE;
  legs = fill + FILL_SIZE;
  legCount = symbols;
  legStride = LEG_HEADER + (<usize>ringLen << 3);
  const end = <u64>legs + <u64>symbols * <u64>legStride;
  const pages = <i32>((end + 0xffff) >> 16);
  const have = memory.size();
  if (pages > have && memory.grow(pages - have) < 0) {
    textLen = 0;
    put("out of memory: ");
    putInt(<i64>end);
    put(" bytes needed for ");
    putInt(symbols);
    put(" symbols");
    stop(FAIL_ERROR);
  }
  // Fresh pages are zero; the static part may not be, so clear the legs.
  memory.fill(legs, 0, <usize>symbols * legStride);

  // Orders placed whose fills were not yet collected.
  let outstanding = 0;
  while (true) {
    const n = next_bars(bars, symbols);
    if (n <= 0) break;
    if (outstanding > 0) {
      while (poll_fill(fill) == 1) {
        if (outstanding > 0) outstanding--;
      }
    }
    for (let i = 0; i < n; i++) {
      const bar = bars + <usize>i * BAR_SIZE;
      const symbol = load<i32>(bar + BAR_SYMBOL);
      if (symbol < 0 || symbol >= legCount) continue;
      const leg = legs + <usize>symbol * legStride;
      push(leg, load<f64>(bar + BAR_CLOSE));
      const now = compare(leg);
      const prev = load<i32>(leg + LEG_PREV);
      if ((prev == LESS || prev == EQUAL) && now == GREATER) {
        if (position(symbol) == 0.0) {
          if (order(symbol, size, ORDER_MARKET, 0.0) > 0) outstanding++;
        }
      } else if ((prev == GREATER || prev == EQUAL) && now == LESS) {
        if (position(symbol) > 0.0) {
          const held = position(symbol);
          if (held != 0.0 && order(symbol, -held, ORDER_MARKET, 0.0) > 0) outstanding++;
        }
      }
      store<i32>(leg + LEG_PREV, now);
    }
  }
  return 0;
}
