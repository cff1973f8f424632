//! Logging: JSON or text lines per `logging.format`, filtered by `logging.level` (or `RUST_LOG`
//! when it is set, for a quick look without editing the config), written to stdout by a
//! background thread. A request never waits for a slow terminal or pipe: under a flood of lines
//! the writer drops lines rather than block (tracing-appender's non-blocking writer).

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, LoggingConfig};

/// Installs the global subscriber. Keep the returned guard for as long as the process logs: when
/// it is dropped, the lines still buffered are written out. `None` when a subscriber was
/// installed already (tests start many nodes in one process).
pub fn init(config: &LoggingConfig) -> Option<WorkerGuard> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(with_quiet_client(&config.level)));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match config.format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_current_span(true).with_span_list(false).with_writer(writer))
            .try_init(),
        // Colours for a person at a terminal; none in a file, a pipe or the journal.
        LogFormat::Text => registry.with(fmt::layer().with_ansi(colours()).with_writer(writer)).try_init(),
    };
    installed.is_ok().then_some(guard)
}

/// Whether text lines may carry ANSI colours: only when stdout is a terminal, and `NO_COLOR` is not
/// set (no-color.org).
fn colours() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// async-nats reports every connection event at info; our own NATS events say what matters.
fn with_quiet_client(level: &str) -> String {
    if level.contains("async_nats") { level.to_string() } else { format!("{level},async_nats=warn") }
}
