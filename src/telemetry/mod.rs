//! Telemetry: logging setup, the Prometheus metrics of one node, and how errors are shown in logs.

mod logging;
pub(crate) mod metrics;

use std::{error::Error, fmt};

pub use logging::init;
pub(crate) use metrics::Metrics;

/// An error with its whole cause chain, `outer: inner: root`, for a log field.
pub fn chain<'a>(error: &'a (dyn Error + 'static)) -> Chain<'a> {
    Chain(error)
}

pub struct Chain<'a>(&'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
