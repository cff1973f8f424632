//! Logging: JSON or text lines per `logging.format`, filtered by `logging.level` (or `RUST_LOG`
//! when it is set, for a quick look without editing the config).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, LoggingConfig};

/// Installs the global subscriber. A second call (tests start many apps) is a no-op.
pub fn init(config: &LoggingConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(with_quiet_client(&config.level)));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match config.format {
        LogFormat::Json => {
            registry.with(fmt::layer().json().with_current_span(true).with_span_list(false)).try_init()
        }
        LogFormat::Text => registry.with(fmt::layer()).try_init(),
    };
}

/// async-nats reports every connection event at info; our own NATS events say what matters.
fn with_quiet_client(level: &str) -> String {
    if level.contains("async_nats") { level.to_string() } else { format!("{level},async_nats=warn") }
}
