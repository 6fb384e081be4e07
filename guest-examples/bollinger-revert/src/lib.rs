//! `bollinger-revert`: long-only mean reversion on Bollinger bands.
//!
//! While flat, buy `size` at market when the close falls below the lower band
//! (SMA of `period` closes minus `k` population standard deviations); while
//! long, close the position when the close rises back above the middle band.
#![no_std]

extern crate alloc;

use alloc::vec::Vec;

use palisade_sdk::indicators::Bollinger;
use palisade_sdk::{Bar, Ctx, Init, Strategy, StrategyError};

pub struct BollingerRevert {
    period: usize,
    k: f64,
    size: f64,
    bands: Vec<Bollinger>,
}

impl Strategy for BollingerRevert {
    fn init(init: &mut Init<'_>) -> Result<Self, StrategyError> {
        Ok(BollingerRevert {
            period: init.param_usize("period"),
            k: init.param("k"),
            size: init.param("size"),
            bands: Vec::new(),
        })
    }

    fn on_bar(&mut self, ctx: &mut Ctx<'_>, bar: &Bar) {
        let i = bar.symbol.max(0) as usize;
        while self.bands.len() <= i {
            self.bands.push(Bollinger::new(self.period, self.k));
        }
        let Some(band) = self.bands[i].update(bar.close) else {
            return;
        };
        if bar.close < band.lower {
            if ctx.position(bar.symbol) == 0.0 {
                let _ = ctx.buy(bar.symbol, self.size);
            }
        } else if bar.close > band.middle && ctx.position(bar.symbol) > 0.0 {
            let _ = ctx.close_position(bar.symbol);
        }
    }
}

palisade_sdk::strategy! {
    strategy: BollingerRevert,
    name: "bollinger-revert",
    version: "0.1.0",
    description: "long-only mean reversion: buy below the lower Bollinger band, exit above the middle band",
    warmup: "period",
    params: {
        period: int = 20, min = 2, max = 1000, doc = "lookback of the bands in bars";
        k: float = 2, min = 0.1, max = 10, doc = "band width in standard deviations";
        size: float = 1, min = 0.000001, max = 1000000000, doc = "units bought on each entry";
    }
}
