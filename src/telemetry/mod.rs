//! Telemetry: logging setup and the Prometheus metrics of one node.

mod logging;
pub mod metrics;

pub use logging::init;
pub use metrics::Metrics;
