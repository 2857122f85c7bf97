//! Market data as Keel stores it, independent of any exchange's wire format.

mod candle;
mod instrument;
mod trade;

pub use candle::{Candle, Resolution};
pub use instrument::Instrument;
pub use trade::{Direction, Trade};
