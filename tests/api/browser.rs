//! The node's page in a real browser (headless Chromium): what someone watching it sees.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, browser::Browser, eventually, json_of, mint};

/// The status the page shows for `user`, if it shows the user.
async fn shown(browser: &Browser, user: &str) -> Option<String> {
    let script = format!(
        "const row = document.querySelector('tr[data-user=\"{user}\"]'); return row ? row.cells[1].textContent : null;"
    );
    match browser.run(&script).await {
        Value::String(status) => Some(status),
        _ => None,
    }
}

#[tokio::test]
async fn the_page_shows_a_change_made_through_the_api_within_a_second() {
    let app = TestApp::spawn().await;
    app.set("alice", json!({"status": "online"})).await;
    let browser = Browser::start().await;
    browser.open(&app.url("/")).await;
    browser.type_into("#users", "alice, bob").await;
    browser.click("#watch").await;
    eventually(Duration::from_secs(10), "the page shows the snapshot", || async {
        (shown(&browser, "alice").await.as_deref() == Some("online")
            && shown(&browser, "bob").await.as_deref() == Some("offline"))
        .then_some(())
    })
    .await;

    let written = Instant::now();
    app.set("alice", json!({"status": "busy", "message": "Deep work"})).await;
    eventually(Duration::from_secs(1), "the page shows the change within a second", || async {
        (shown(&browser, "alice").await.as_deref() == Some("busy")).then_some(())
    })
    .await;
    let took = written.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    let message =
        browser.run("return document.querySelector('tr[data-user=\"alice\"]').cells[2].textContent;").await;
    assert_eq!(message, "Deep work");

    // Setting your own status from the page, with a token pasted in.
    browser.type_into("#token", &mint("bob")).await;
    browser.run("document.getElementById('status').value = 'away';").await;
    browser.click("#set").await;
    eventually(Duration::from_secs(5), "bob's own write shows on the page", || async {
        (shown(&browser, "bob").await.as_deref() == Some("away")).then_some(())
    })
    .await;
    let stored = json_of(app.read("bob").await).await.1;
    assert_eq!(stored["data"]["bob"]["status"], "away");

    // The page loads nothing from elsewhere.
    let page = app.get("/").await;
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "no outside resources");
    drop(browser);
    app.stop().await;
}
