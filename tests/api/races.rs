//! Races a real client can cause: reads against writes, erasures against in-flight work.

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

/// A read of a user nobody has written yet, racing that user's first write. The read's KV answer
/// ("never seen") may come back after the write is in the cache; it must not replace it. Once the
/// write answered 200, this node serves it. (The window is narrow on loopback; the deterministic
/// check of the same rule is `cache::load`'s unit test, which holds the load back on purpose.)
#[tokio::test]
async fn a_read_racing_the_first_write_never_leaves_a_stale_answer() {
    let app = TestApp::spawn_with(|c| c.rate_limit.enabled = false).await;
    let trials = 2000;
    futures::stream::iter(0..trials)
        .for_each_concurrent(32, |i| {
            let app = &app;
            async move {
                let user = format!("race{i}");
                let (read, write) = tokio::join!(app.read(&user), app.put(&user, json!({"status": "busy"})));
                assert!(matches!(read.status(), StatusCode::OK | StatusCode::NOT_FOUND), "{}", read.status());
                assert_eq!(write.status(), StatusCode::OK);
                let after = app.read(&user).await;
                assert_eq!(after.status(), StatusCode::OK, "trial {i}: the acknowledged write is not served");
            }
        })
        .await;
    app.stop().await;
}
