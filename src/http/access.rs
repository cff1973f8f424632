//! The access log: which requests get a line (`logging.requests`), and what the line says. A
//! refused token's reason travels on its 401 response ([`RefusedToken`]), so that the access line
//! is the only line a refused token costs, and the client's answer says nothing of the reason.

use std::time::Duration;

use axum::http::StatusCode;

use crate::config::{LoggingConfig, RequestLogs};

/// Why a token was refused, attached to the 401 response for the access log.
#[derive(Debug, Clone)]
pub(crate) struct RefusedToken(pub String);

/// The access-log policy of a node.
#[derive(Debug, Clone)]
pub(crate) struct AccessLog {
    mode: RequestLogs,
    slow: Duration,
}

/// One finished request.
pub(crate) struct Finished<'a> {
    pub method: &'static str,
    pub route: &'a str,
    pub status: StatusCode,
    pub elapsed: Duration,
    pub refused: Option<&'a RefusedToken>,
}

impl AccessLog {
    pub(crate) fn new(config: &LoggingConfig) -> Self {
        Self { mode: config.requests, slow: config.slow_request }
    }

    /// Whether `request` gets a line.
    fn wants(&self, request: &Finished<'_>) -> bool {
        match self.mode {
            RequestLogs::Off => false,
            RequestLogs::All => true,
            RequestLogs::Errors => {
                request.status.is_server_error()
                    || request.status == StatusCode::TOO_MANY_REQUESTS
                    || request.refused.is_some()
                    || request.elapsed >= self.slow
            }
        }
    }

    pub(crate) fn record(&self, request: Finished<'_>) {
        if !self.wants(&request) {
            return;
        }
        let Finished { method, route, status, elapsed, refused } = request;
        let (status, latency_ms) = (status.as_u16(), elapsed.as_secs_f64() * 1000.0);
        match refused {
            Some(RefusedToken(reason)) => {
                tracing::info!(method, route, status, latency_ms, reason = %reason, "token refused")
            }
            None if status >= 500 => tracing::warn!(method, route, status, latency_ms, "response"),
            None => tracing::info!(method, route, status, latency_ms, "response"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(status: u16, ms: u64, refused: Option<&RefusedToken>) -> Finished<'_> {
        Finished {
            method: "GET",
            route: "/x",
            status: StatusCode::from_u16(status).unwrap(),
            elapsed: Duration::from_millis(ms),
            refused,
        }
    }

    #[test]
    fn errors_mode_logs_failures_refusals_limits_and_slow_requests_only() {
        let config = LoggingConfig::default();
        let log = AccessLog::new(&config);
        let token = RefusedToken("expired".into());
        assert!(!log.wants(&finished(200, 1, None)));
        assert!(!log.wants(&finished(404, 1, None)));
        assert!(log.wants(&finished(503, 1, None)));
        assert!(log.wants(&finished(429, 1, None)));
        assert!(log.wants(&finished(401, 1, Some(&token))));
        assert!(log.wants(&finished(200, 1500, None)));
        let all = AccessLog { mode: RequestLogs::All, ..log.clone() };
        assert!(all.wants(&finished(200, 1, None)));
        let off = AccessLog { mode: RequestLogs::Off, ..log };
        assert!(!off.wants(&finished(503, 5000, Some(&token))));
    }
}
