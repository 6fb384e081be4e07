//! What a live run waits on between timestamps: a deployment's feed of
//! bars, and where the strategy's decisions go. The sandbox calls it from
//! the strategy's `next_bars`; the deployment (in the service) implements it.

use std::future::Future;
use std::pin::Pin;

use palisade_host_api::Bar;

use crate::session::Session;

/// The future [`Feed::next`] returns.
pub type NextBars<'a> = Pin<Box<dyn Future<Output = Option<Vec<Bar>>> + Send + 'a>>;

/// A live run's source of bars and sink of decisions.
pub trait Feed: Send {
    /// The strategy has handled the timestamp it was handed (and, the first
    /// time, its initialisation): `session` holds the orders it placed
    /// ([`Session::take_orders`]) and the paper fills since
    /// ([`palisade_backtest::Backtest::take_fills`]). Called at every
    /// timestamp, replayed or live, before the next one is handed over.
    fn decided(&mut self, session: &mut Session);

    /// Waits for the next bars (one or more whole timestamps, in order,
    /// already stored durably); `None` ends the run: the strategy gets its
    /// finish phase. Called only when the session has no bar left to hand
    /// over.
    fn next(&mut self) -> NextBars<'_>;
}
