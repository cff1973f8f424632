//! The HTTP ceiling of `bench/run`: a minimal axum server answering every request with the
//! bytes of FILE as JSON, built like the node (the release profile the project ships, its
//! allocator), so that the ratio of a cached GET to it measures the node's own work.
//!
//!     http_ceiling --port P --body FILE
//!
//! Without mimalloc (the system allocator) or without the profile's LTO it answered 10 to 20 %
//! fewer requests per second on the benchmark machine: a slower ceiling flatters the node.

#[global_allocator]
static GLOBAL: presence::allocator::Allocator = presence::allocator::Allocator;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let port: u16 = value("--port").and_then(|p| p.parse().ok()).expect("--port P");
    let body: &'static [u8] =
        std::fs::read(value("--body").expect("--body FILE")).expect("read --body").leak();
    let app = axum::Router::new()
        .fallback(move || async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
