//! The node's page in a real browser (headless Chromium): what someone watching it sees, at a
//! desktop's width and a phone's.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, browser::Browser, eventually, json_of, mint};

/// The status the page shows for `user`, if it shows the user.
async fn shown(browser: &Browser, user: &str) -> Option<String> {
    let script = format!(
        "const row = document.querySelector('tr[data-user=\"{user}\"]'); \
         return row ? row.cells[1].querySelector('.status').textContent : null;"
    );
    match browser.run(&script).await {
        Value::String(status) => Some(status),
        _ => None,
    }
}

/// What `script` returns, as text.
async fn text(browser: &Browser, script: &str) -> String {
    browser.run(script).await.as_str().unwrap_or_default().to_string()
}

async fn watch(browser: &Browser, users: &str) {
    browser.type_into("#users", users).await;
    browser.click("#watch").await;
}

#[tokio::test]
async fn the_page_shows_a_change_made_through_the_api_within_a_second() {
    let app = TestApp::spawn().await;
    app.set("alice", json!({"status": "online"})).await;
    let browser = Browser::start().await;
    browser.open(&app.url("/")).await;
    watch(&browser, "alice, bob").await;
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
        text(&browser, "return document.querySelector('tr[data-user=\"alice\"] .message').textContent;")
            .await;
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

/// At 1280 and at 400 pixels wide: nothing wider than the screen (long ids and messages
/// included), an empty state before anything is watched, the right command for a token, and an
/// icon the browser finds.
#[tokio::test]
async fn the_page_fits_a_desktop_and_a_phone() {
    let app = TestApp::spawn().await;
    let long_id = format!("user-{}", "x".repeat(100));
    let long_message = "a-very-long-message-without-any-space-".repeat(6);
    app.set(&long_id, json!({"status": "busy", "message": long_message})).await;
    let browser = Browser::start().await;
    for width in [1280, 400] {
        browser.resize(width, 900).await;
        browser.open(&app.url("/")).await;
        let viewport = browser.run("return window.innerWidth;").await.as_u64().unwrap();
        assert!(viewport.abs_diff(u64::from(width)) <= 20, "the window is {viewport} px wide, not {width}");
        let empty = text(
            &browser,
            "const e = document.getElementById('empty'); return e.hidden ? '' : e.textContent;",
        )
        .await;
        assert!(empty.contains("Nobody is watched yet"), "{empty}");
        let hint = text(&browser, "return document.querySelector('label[for=token]').textContent;").await;
        assert!(hint.contains("presence token --user"), "{hint}");

        watch(&browser, &format!("{long_id} alice")).await;
        eventually(Duration::from_secs(10), "the page shows the snapshot", || async {
            (shown(&browser, &long_id).await.as_deref() == Some("busy")).then_some(())
        })
        .await;
        let (page_width, screen) = (
            browser.run("return document.documentElement.scrollWidth;").await.as_u64().unwrap(),
            browser.run("return document.documentElement.clientWidth;").await.as_u64().unwrap(),
        );
        assert!(page_width <= screen, "at {width} px the page is {page_width} px wide, wider than {screen}");
        let empty_hidden = browser.run("return document.getElementById('empty').hidden;").await;
        assert_eq!(empty_hidden, json!(true), "the empty state goes once users are watched");
    }

    let icon = app.get("/favicon.ico").await;
    assert_eq!(icon.status(), 200);
    assert_eq!(icon.headers()["content-type"], "image/x-icon");
    let loaded = browser
        .run("const i = new Image(); i.src = '/favicon.ico'; return i.decode().then(() => i.naturalWidth);")
        .await;
    assert_eq!(loaded, json!(32), "the icon is an image the browser decodes");
    drop(browser);
    app.stop().await;
}

/// Last seen reads "5 minutes ago" with the exact time on hover, "now" for someone present, and
/// an owner who goes invisible sees "invisible" (with a word on what others see) while everyone
/// else reads offline.
#[tokio::test]
async fn times_are_relative_and_the_owner_sees_their_invisible_status() {
    let app = TestApp::spawn().await;
    app.set("carol", json!({"status": "online"})).await;
    app.set("carol", json!({"status": "offline"})).await;
    app.set("dave", json!({"status": "online"})).await;
    let browser = Browser::start().await;
    browser.open(&app.url("/?users=carol,dave,erin")).await;
    eventually(Duration::from_secs(10), "the page watches the users in its address", || async {
        (shown(&browser, "dave").await.as_deref() == Some("online")).then_some(())
    })
    .await;
    let cell = |user: &str| format!("return document.querySelector('tr[data-user=\"{user}\"]').cells[2]");
    assert_eq!(text(&browser, &format!("{}.textContent;", cell("carol"))).await, "just now");
    let exact = text(&browser, &format!("{}.querySelector('time').title;", cell("carol"))).await;
    let year = chrono::Utc::now().format("%Y").to_string();
    assert!(exact.contains(&year), "the exact time on hover: {exact}");
    assert_eq!(text(&browser, &format!("{}.textContent;", cell("dave"))).await, "now");
    assert_eq!(text(&browser, &format!("{}.textContent;", cell("erin"))).await, "never");
    let five = text(&browser, "return ago(new Date(Date.now() - 5 * 60000).toISOString());").await;
    assert_eq!(five, "5 minutes ago");
    let days = text(&browser, "return ago(new Date(Date.now() - 3 * 86400000).toISOString());").await;
    assert_eq!(days, "3 days ago");

    browser.type_into("#token", &mint("dave")).await;
    browser.run("document.getElementById('status').value = 'invisible';").await;
    browser.click("#set").await;
    eventually(Duration::from_secs(5), "the owner sees invisible", || async {
        (shown(&browser, "dave").await.as_deref() == Some("invisible")).then_some(())
    })
    .await;
    let note =
        text(&browser, "return document.querySelector('tr[data-user=\"dave\"] .note').textContent;").await;
    assert!(note.contains("everyone else sees offline"), "{note}");
    let result = text(&browser, "return document.getElementById('status-result').textContent;").await;
    assert!(result.contains("invisible") && result.contains("offline"), "{result}");
    let public = json_of(app.read("dave").await).await.1;
    assert_eq!(public["data"]["dave"]["status"], "offline", "everyone else reads offline");
    drop(browser);
    app.stop().await;
}

/// The room view: a token pasted, a room joined; the page lists who else is there as they come,
/// shows who is typing, and its own typing reaches the others.
#[tokio::test]
async fn the_page_joins_a_room_and_shows_its_members_and_typing_live() {
    use crate::helpers::{live::Ws, mint_rooms};
    let app = TestApp::spawn().await;
    let browser = Browser::start().await;
    browser.open(&app.url("/")).await;
    browser.type_into("#token", &mint_rooms("pia", &["doc-*"])).await;
    browser.type_into("#room", "doc-7").await;
    browser.type_into("#room-name", "Pia").await;
    browser.click("#join").await;
    let count = || text(&browser, "return document.getElementById('room-count').textContent;");
    eventually(Duration::from_secs(10), "the page is in the room", || async {
        (count().await == "doc-7: 1 user on 1 device").then_some(())
    })
    .await;

    // Another member, over a WebSocket of its own: the page lists them with their meta.
    let mut quinn = Ws::connect(&app).await;
    let token = mint_rooms("quinn", &["doc-7"]);
    quinn.send(json!({"type": "hello", "token": token, "device": "phone", "kind": "mobile"})).await;
    quinn.expect("welcome", Duration::from_secs(5)).await;
    quinn.send(json!({"type": "join", "room": "doc-7", "meta": {"name": "Quinn"}})).await;
    let joined = quinn.expect("joined", Duration::from_secs(5)).await;
    assert_eq!(joined["members"]["pia"][0]["meta"], json!({"name": "Pia"}), "{joined}");
    let meta = "const r = document.querySelector('#members tr[data-user=\"quinn\"]'); return r ? r.cells[2].textContent : '';";
    eventually(Duration::from_secs(5), "the page lists quinn", || async {
        (text(&browser, meta).await == r#"{"name":"Quinn"}"#).then_some(())
    })
    .await;
    assert_eq!(count().await, "doc-7: 2 users on 2 devices");

    // Quinn types: the page says so. The page's user types: quinn hears it.
    quinn.send(json!({"type": "typing", "room": "doc-7"})).await;
    let typing = || text(&browser, "return document.getElementById('typing').textContent;");
    eventually(Duration::from_secs(5), "the page shows quinn typing", || async {
        (typing().await == "quinn is typing…").then_some(())
    })
    .await;
    browser.type_into("#say", "hello").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let message = quinn.next_within(deadline - Instant::now()).await.expect("pia's typing reaches quinn");
        if message["type"] == "room"
            && message["typing"].as_array().is_some_and(|t| t.contains(&json!("pia")))
        {
            break;
        }
    }

    // Leaving from the page: quinn sees pia leave.
    browser.click("#leave").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let message = quinn.next_within(deadline - Instant::now()).await.expect("pia's leave reaches quinn");
        if message["type"] == "room" && message["leaves"].get("pia").is_some() {
            assert_eq!(message["count"], 1, "{message}");
            break;
        }
    }
    drop(browser);
    app.stop().await;
}

/// The page watches through the TypeScript client: in Chromium, a node that goes away and comes
/// back (a new one on the same address, with nothing stored) is reconnected to by itself, and a
/// change made there is shown.
#[tokio::test]
async fn the_pages_client_reconnects_to_a_node_that_came_back() {
    // The first start binds a port the OS chose; the node comes back on the same address.
    let app = TestApp::spawn().await;
    let port = app.addr.port();
    app.set("rita", json!({"status": "online"})).await;
    let browser = Browser::start().await;
    browser.open(&app.url("/")).await;
    watch(&browser, "rita").await;
    let link = || text(&browser, "return document.getElementById('link').textContent;");
    eventually(Duration::from_secs(10), "live, rita online", || async {
        (link().await == "live" && shown(&browser, "rita").await.as_deref() == Some("online")).then_some(())
    })
    .await;
    let loaded =
        text(&browser, "return performance.getEntriesByType('resource').map(e => e.name).join(' ');").await;
    assert!(loaded.contains("/page/client/client.js"), "the page loads the client: {loaded}");
    app.stop().await;
    eventually(Duration::from_secs(10), "the page says it reconnects", || async {
        (link().await == "reconnecting").then_some(())
    })
    .await;
    let app = TestApp::spawn_with(|c| c.service.port = port).await;
    app.set("rita", json!({"status": "busy"})).await;
    eventually(Duration::from_secs(30), "live again, with the change", || async {
        (link().await == "live" && shown(&browser, "rita").await.as_deref() == Some("busy")).then_some(())
    })
    .await;
    app.stop().await;
}
