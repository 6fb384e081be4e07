//! The `Strategy` trait, the context it acts through, and the event loop that
//! drives it (the same loop on wasm32 and natively).

use alloc::string::String;
use alloc::vec;

use palisade_host_api::{error, fail_kind, log_level, order_kind, Bar, Fill};

#[cfg(target_arch = "wasm32")]
pub(crate) type HostRef<'a> = &'a mut crate::host::WasmHost;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type HostRef<'a> = &'a mut dyn crate::host::Host;

#[cfg(target_arch = "wasm32")]
use crate::host::Host as _;

/// A trading strategy.
///
/// The host creates it once with [`Strategy::init`], then hands over the
/// data one timestamp at a time: for each timestamp it calls
/// [`Strategy::on_fill`] for the orders that filled at its opens, then
/// [`Strategy::on_timestamp`] with every symbol's bar at it (by default
/// [`Strategy::on_bar`] for each, in symbol order), and [`Strategy::finish`]
/// once at the end. A strategy never sees a bar stamped after the timestamp
/// it decides at.
pub trait Strategy: Sized {
    /// Builds the strategy from its parameters. Declared ranges are already
    /// enforced by the host; return [`StrategyError::invalid_params`] for any other
    /// constraint (e.g. `fast < slow`).
    fn init(init: &mut Init<'_>) -> Result<Self, StrategyError>;

    /// Handles one bar. Orders placed here fill on their symbol's first bar
    /// stamped after this one, at the earliest.
    fn on_bar(&mut self, ctx: &mut Ctx<'_>, bar: &Bar);

    /// Handles every symbol's bar at one timestamp (at least one, in symbol
    /// order); by default calls [`Strategy::on_bar`] for each. Override it to
    /// decide on several symbols together (pairs, baskets): all of them are
    /// known at this timestamp's close.
    fn on_timestamp(&mut self, ctx: &mut Ctx<'_>, bars: &[Bar]) {
        for bar in bars {
            self.on_bar(ctx, bar);
        }
    }

    /// Called for each fill of an order this strategy placed.
    fn on_fill(&mut self, _ctx: &mut Ctx<'_>, _fill: &Fill) {}

    /// Called once after the last bar; orders are refused here.
    fn finish(&mut self, _ctx: &mut Ctx<'_>) {}
}

/// Why a strategy stopped on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrategyError {
    /// One of `palisade_host_api::fail_kind`.
    pub kind: i32,
    pub message: String,
}

impl StrategyError {
    /// The parameters break a constraint the strategy checks itself.
    pub fn invalid_params(message: impl Into<String>) -> StrategyError {
        StrategyError {
            kind: fail_kind::INVALID_PARAMS,
            message: message.into(),
        }
    }

    /// Any other error the strategy wants to stop the run with.
    pub fn error(message: impl Into<String>) -> StrategyError {
        StrategyError {
            kind: fail_kind::ERROR,
            message: message.into(),
        }
    }
}

/// Log levels for [`Ctx::log`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    fn code(self) -> i32 {
        match self {
            Level::Error => log_level::ERROR,
            Level::Warn => log_level::WARN,
            Level::Info => log_level::INFO,
            Level::Debug => log_level::DEBUG,
        }
    }
}

/// What kind of order to place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OrderKind {
    /// Fill at the open of the symbol's first bar after now.
    Market,
    /// Fill at this price or better.
    Limit(f64),
    /// Becomes a market order once the price trades through this level.
    Stop(f64),
}

/// Id of a placed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(pub i64);

/// Why the host refused an order or a cancel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderError {
    /// Zero, NaN or infinite quantity, or a bad limit/stop price.
    BadArgument,
    UnknownSymbol,
    UnknownOrder,
    /// No timestamp is being handled (in `init` or `finish`).
    NoBar,
    /// A code this SDK version does not know.
    Other(i64),
}

impl OrderError {
    fn from_code(code: i64) -> OrderError {
        match i32::try_from(code) {
            Ok(error::BAD_ARGUMENT) => OrderError::BadArgument,
            Ok(error::UNKNOWN_SYMBOL) => OrderError::UnknownSymbol,
            Ok(error::UNKNOWN_ORDER) => OrderError::UnknownOrder,
            Ok(error::NO_BAR) => OrderError::NoBar,
            _ => OrderError::Other(code),
        }
    }
}

/// What a strategy can use while it is being created.
pub struct Init<'a> {
    pub(crate) host: HostRef<'a>,
}

impl Init<'_> {
    /// A declared parameter's value (booleans are 0 or 1). Reading a name
    /// the manifest does not declare stops the run (`invalid_params`).
    pub fn param(&mut self, name: &str) -> f64 {
        self.host.param(name)
    }

    /// A declared `int` parameter as a count (negative or NaN values give 0).
    pub fn param_usize(&mut self, name: &str) -> usize {
        let v = self.param(name);
        if v >= 0.0 {
            v as usize
        } else {
            0
        }
    }

    /// A declared `bool` parameter.
    pub fn param_bool(&mut self, name: &str) -> bool {
        self.param(name) != 0.0
    }

    /// The name of a symbol id, if the data has it.
    pub fn symbol_name(&mut self, symbol: i32) -> Option<String> {
        symbol_name(&mut *self.host, symbol)
    }

    /// Writes a log line to the run's log.
    pub fn log(&mut self, level: Level, message: &str) {
        self.host.log(level.code(), message);
    }
}

fn symbol_name(host: HostRef<'_>, symbol: i32) -> Option<String> {
    let mut buf = vec![0u8; 64];
    let len = host.symbol_name(symbol, &mut buf);
    let len = usize::try_from(len).ok()?;
    if len > buf.len() {
        buf.resize(len, 0);
        host.symbol_name(symbol, &mut buf);
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

/// What a strategy can do while it handles a bar or a fill.
pub struct Ctx<'a> {
    host: HostRef<'a>,
    outstanding: &'a mut u32,
}

impl Ctx<'_> {
    /// Places an order of `qty` units (> 0 buys, < 0 sells).
    pub fn order(&mut self, symbol: i32, qty: f64, kind: OrderKind) -> Result<OrderId, OrderError> {
        let (code, price) = match kind {
            OrderKind::Market => (order_kind::MARKET, 0.0),
            OrderKind::Limit(p) => (order_kind::LIMIT, p),
            OrderKind::Stop(p) => (order_kind::STOP, p),
        };
        let id = self.host.order(symbol, qty, code, price);
        if id > 0 {
            *self.outstanding += 1;
            Ok(OrderId(id))
        } else {
            Err(OrderError::from_code(id))
        }
    }

    /// Buys `qty` units at market.
    pub fn buy(&mut self, symbol: i32, qty: f64) -> Result<OrderId, OrderError> {
        self.order(symbol, qty, OrderKind::Market)
    }

    /// Sells `qty` units at market.
    pub fn sell(&mut self, symbol: i32, qty: f64) -> Result<OrderId, OrderError> {
        self.order(symbol, -qty, OrderKind::Market)
    }

    /// Sends a market order that brings the position in `symbol` back to
    /// zero; `Ok(None)` when already flat.
    pub fn close_position(&mut self, symbol: i32) -> Result<Option<OrderId>, OrderError> {
        let held = self.position(symbol);
        if held == 0.0 {
            return Ok(None);
        }
        self.order(symbol, -held, OrderKind::Market).map(Some)
    }

    /// Cancels a pending order.
    pub fn cancel(&mut self, id: OrderId) -> Result<(), OrderError> {
        match self.host.cancel(id.0) {
            0 => {
                *self.outstanding = self.outstanding.saturating_sub(1);
                Ok(())
            }
            code => Err(OrderError::from_code(i64::from(code))),
        }
    }

    /// Signed quantity held (orders fill at the open of a later bar).
    pub fn position(&mut self, symbol: i32) -> f64 {
        self.host.position(symbol)
    }

    pub fn cash(&mut self) -> f64 {
        self.host.cash()
    }

    /// Cash plus positions marked at their last close.
    pub fn equity(&mut self) -> f64 {
        self.host.equity()
    }

    /// The next value in `[0, 1)` of the run's seeded random stream.
    pub fn random(&mut self) -> f64 {
        self.host.random()
    }

    /// Records a named value in the run's result (last value wins).
    pub fn metric(&mut self, name: &str, value: f64) {
        self.host.metric(name, value);
    }

    /// Writes a log line to the run's log (bounded by the policy).
    pub fn log(&mut self, level: Level, message: &str) {
        self.host.log(level.code(), message);
    }

    /// A declared parameter's value (an undeclared name stops the run).
    pub fn param(&mut self, name: &str) -> f64 {
        self.host.param(name)
    }

    /// The name of a symbol id, if the data has it.
    pub fn symbol_name(&mut self, symbol: i32) -> Option<String> {
        symbol_name(&mut *self.host, symbol)
    }

    fn deliver_fills<S: Strategy>(&mut self, strategy: &mut S) {
        while let Some(fill) = self.host.poll_fill() {
            *self.outstanding = self.outstanding.saturating_sub(1);
            strategy.on_fill(self, &fill);
        }
    }
}

/// Runs a strategy to completion against `host`: init, every timestamp,
/// finish.
///
/// This is the loop the wasm export runs; natively it lets tests and
/// benchmarks drive the same strategy code through any [`crate::Host`].
pub fn run<S: Strategy>(host: HostRef<'_>) -> Result<(), StrategyError> {
    let mut strategy = S::init(&mut Init { host: &mut *host })?;
    let mut bars = vec![Bar::default(); host.symbol_count().max(1)];
    let mut outstanding = 0u32;
    loop {
        let n = host.next_bars(&mut bars);
        if n == 0 {
            break;
        }
        let mut ctx = Ctx {
            host: &mut *host,
            outstanding: &mut outstanding,
        };
        if *ctx.outstanding > 0 {
            ctx.deliver_fills(&mut strategy);
        }
        strategy.on_timestamp(&mut ctx, &bars[..n]);
    }
    let mut ctx = Ctx {
        host: &mut *host,
        outstanding: &mut outstanding,
    };
    strategy.finish(&mut ctx);
    Ok(())
}
