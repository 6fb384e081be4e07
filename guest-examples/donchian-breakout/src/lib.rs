//! `donchian-breakout`: long-only channel breakout (the "turtle" rule).
//!
//! While flat, buy `size` at market when the close exceeds the highest high of
//! the previous `entry` bars; while long, close the position when the close
//! falls below the lowest low of the previous `exit` bars.
#![no_std]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;

use palisade_sdk::indicators::{Donchian, DonchianChannel};
use palisade_sdk::{Bar, Ctx, Init, Strategy, StrategyError};

struct Leg {
    entry: Donchian,
    exit: Donchian,
    /// Channels as of the previous bar (a breakout is measured against them).
    prev: (Option<DonchianChannel>, Option<DonchianChannel>),
}

pub struct DonchianBreakout {
    entry_len: usize,
    exit_len: usize,
    size: f64,
    legs: Vec<Leg>,
}

impl Strategy for DonchianBreakout {
    fn init(init: &mut Init<'_>) -> Result<Self, StrategyError> {
        let entry_len = init.param_usize("entry");
        let exit_len = init.param_usize("exit");
        if exit_len > entry_len {
            return Err(StrategyError::invalid_params(format!(
                "exit ({exit_len}) must not exceed entry ({entry_len})"
            )));
        }
        Ok(DonchianBreakout {
            entry_len,
            exit_len,
            size: init.param("size"),
            legs: Vec::new(),
        })
    }

    fn on_bar(&mut self, ctx: &mut Ctx<'_>, bar: &Bar) {
        let i = bar.symbol.max(0) as usize;
        while self.legs.len() <= i {
            self.legs.push(Leg {
                entry: Donchian::new(self.entry_len),
                exit: Donchian::new(self.exit_len),
                prev: (None, None),
            });
        }
        let leg = &mut self.legs[i];
        if let (Some(entry), Some(exit)) = leg.prev {
            if bar.close > entry.upper {
                if ctx.position(bar.symbol) == 0.0 {
                    let _ = ctx.buy(bar.symbol, self.size);
                }
            } else if bar.close < exit.lower && ctx.position(bar.symbol) > 0.0 {
                let _ = ctx.close_position(bar.symbol);
            }
        }
        leg.prev = (
            leg.entry.update(bar.high, bar.low),
            leg.exit.update(bar.high, bar.low),
        );
    }
}

palisade_sdk::strategy! {
    strategy: DonchianBreakout,
    name: "donchian-breakout",
    version: "0.1.0",
    description: "long-only channel breakout: buy above the previous entry-bar high, exit below the previous exit-bar low",
    warmup: "entry",
    params: {
        entry: int = 20, min = 2, max = 1000, doc = "breakout lookback in bars";
        exit: int = 10, min = 1, max = 1000, doc = "exit lookback in bars";
        size: float = 1, min = 0.000001, max = 1000000000, doc = "units bought on each entry";
    }
}
