//! A leaf gets into its center only with the leafnode password or an admitted certificate, and
//! once in, holds a leaf's rights and no more.

use std::time::Duration;

use presence::config::{Config, LeafTls, NodeType, Secret};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Pki, TestApp, assert_error, eventually, json_of};

#[tokio::test]
async fn a_leaf_with_the_wrong_password_is_refused() {
    let center = TestApp::spawn().await;
    let leaf_port = center.config.nats.leaf_port;
    let leaf = TestApp::spawn_with(|config| {
        config.service.node_type = presence::config::NodeType::Leaf;
        config.service.node_id = "intruder".into();
        config.nats.center_url = Some(format!("nats-leaf://127.0.0.1:{leaf_port}"));
        config.nats.leaf_password = Some(Secret::new("not-the-leaf-password-0123".into()));
    })
    .await;
    refused_by_the_center(&leaf, "the wrong password").await;
    eventually(Duration::from_secs(2), "the center still serves", || async {
        (center.health().await["status"] == "ok").then_some(())
    })
    .await;
    leaf.stop().await;
    center.stop().await;
}

/// A leaf the center did not admit: it started on its own (it waited for its center at
/// start-up and was not let in), and stays on its own: degraded, no bucket, writes refused.
async fn refused_by_the_center(leaf: &TestApp, what: &str) {
    assert_eq!(leaf.health().await["status"], "degraded", "a leaf with {what}");
    let (_, nats) = leaf.nats_health().await;
    assert_eq!(nats["bucket"], false, "a leaf with {what} reached the bucket: {nats}");
    let write = leaf.put("intruder", json!({"status": "online"})).await;
    assert_eq!(write.status(), StatusCode::SERVICE_UNAVAILABLE, "a leaf with {what} wrote");
}

/// A center whose leafnode listener takes mutual TLS and admits `leaves`.
async fn tls_center(pki: &Pki, leaves: &[&str]) -> TestApp {
    let tls = pki.center("center.test", leaves);
    TestApp::spawn_with(move |c| c.nats.leaf_tls = Some(tls)).await
}

/// Makes `config` a leaf dialling `center` by name (`localhost`, in the certificates), over TLS
/// with `tls`.
fn as_tls_leaf(config: &mut Config, center: &TestApp, node_id: &str, tls: Option<LeafTls>) {
    config.service.node_type = NodeType::Leaf;
    config.service.node_id = node_id.into();
    config.nats.center_url = Some(format!("localhost:{}", center.config.nats.leaf_port));
    config.nats.leaf_tls = tls;
}

#[tokio::test]
async fn a_leaf_with_its_certificate_works_end_to_end_with_only_a_leafs_rights() {
    let pki = Pki::new(&["center.test", "leaf-a.test"]);
    let center = tls_center(&pki, &["leaf-a.test"]).await;
    let leaf_tls = pki.leaf("leaf-a.test");
    let leaf = TestApp::spawn_with(|c| as_tls_leaf(c, &center, "leaf-a", Some(leaf_tls))).await;
    let conf = std::fs::read_to_string(leaf.data_dir().join("nats-server.conf")).unwrap();
    assert!(conf.contains("tls://localhost:"), "the leaf dials the center over TLS:\n{conf}");

    // Writes, reads, history and erasure cross the link both ways.
    let (status, body) =
        json_of(leaf.put("lea", json!({"status": "busy", "message": "over TLS"})).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = json_of(center.read("lea").await).await;
    assert_eq!((status, &body["data"]["lea"]["message"]), (StatusCode::OK, &json!("over TLS")), "{body}");
    center.set("cem", json!({"status": "away"})).await;
    eventually(Duration::from_secs(5), "the center's write reaches the leaf", || async {
        (json_of(leaf.read("cem").await).await.1["data"]["cem"]["status"] == "away").then_some(())
    })
    .await;
    let (_, history) = json_of(leaf.history("lea", None).await).await;
    assert_eq!(history["data"]["lea"][0]["kind"], "update", "{history}");
    // A device session at the leaf is written into the center's bucket with a leaf's rights.
    let session = crate::helpers::live::Ws::session(&leaf, "lea", "tab", "web").await;
    eventually(Duration::from_secs(5), "the leaf's session reaches the center", || async {
        let shown = json_of(center.read("lea").await).await.1;
        (shown["data"]["lea"]["devices"] == json!({"web": "online"})).then_some(())
    })
    .await;
    session.close().await;
    assert_eq!(leaf.erase("lea").await.status(), StatusCode::OK);
    assert_error(center.read("lea").await, StatusCode::NOT_FOUND).await;

    // The region's copy follows the center's bucket with a leaf's rights.
    let local = crate::helpers::nats_connect(&leaf.nats_url()).await;
    let last = |client: async_nats::Client| async move {
        let js = async_nats::jetstream::new(client);
        js.get_stream("KV_presence").await.ok()?.info().await.ok().map(|i| i.state.last_sequence)
    };
    let operator = crate::helpers::nats_connect(&center.nats_url()).await;
    let wanted = last(operator.clone()).await.unwrap();
    eventually(Duration::from_secs(20), "the leaf's copy has the center's last revision", || async {
        (last(local.clone()).await >= Some(wanted)).then_some(())
    })
    .await;

    // Through the leaf's own server, nothing beyond a leaf's rights reaches the center.
    let js = async_nats::jetstream::with_domain(local.clone(), "center");
    assert!(js.delete_stream("KV_presence").await.is_err(), "a leaf deleted the bucket");
    assert!(js.delete_stream("PRESENCE_EVENTS").await.is_err(), "a leaf deleted the audit log");
    assert!(js.create_stream("STOLEN").await.is_err(), "a leaf created a stream at the center");
    let center_js = async_nats::jetstream::new(operator);
    assert!(center_js.get_stream("KV_presence").await.is_ok(), "the bucket is still there");
    assert!(center_js.get_stream("STOLEN").await.is_err());
    leaf.stop().await;
    center.stop().await;
}

#[tokio::test]
async fn a_leaf_without_a_valid_certificate_is_refused() {
    let pki = Pki::new(&["center.test", "leaf-a.test", "stranger.test"]);
    let other_ca = Pki::new(&["leaf-a.test"]);
    let center = tls_center(&pki, &["leaf-a.test"]).await;
    let attempts = [
        ("no certificate", None),
        (
            "a certificate from another CA",
            Some(LeafTls { ca_file: pki.ca(), ..other_ca.leaf("leaf-a.test") }),
        ),
        ("a valid certificate the center does not admit", Some(pki.leaf("stranger.test"))),
    ];
    for (what, tls) in attempts {
        let leaf = TestApp::spawn_with(|config| as_tls_leaf(config, &center, "intruder", tls)).await;
        refused_by_the_center(&leaf, what).await;
        leaf.stop().await;
    }
    let (status, body) = json_of(center.read("anyone").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the center still serves: {body}");
    center.stop().await;
}

/// A leaf admitted by the leaf password holds exactly a certificate leaf's rights: through its
/// server it cannot delete or purge the audit log, change the bucket's settings (a `max_age` of a
/// minute would delete every presence not written within it), nor create a stream. And when
/// someone who may (an operator) does change them, the center's `/health` says `degraded` and
/// what is wrong, as it does for a stream deleted.
#[tokio::test]
async fn a_password_leaf_has_a_leafs_rights_and_a_tampered_stream_degrades_health() {
    let center = TestApp::spawn().await;
    let leaf = crate::helpers::leaf_app(center.config.nats.leaf_port, "leaf-p", "eu-west").await;
    assert_eq!(leaf.put("pia", json!({"status": "online"})).await.status(), StatusCode::OK);
    let local = crate::helpers::nats_connect(&leaf.nats_url()).await;
    let js = async_nats::jetstream::with_domain(local, "center");
    assert!(js.delete_stream("PRESENCE_EVENTS").await.is_err(), "a leaf deleted the audit log");
    let log = js.get_stream("PRESENCE_EVENTS").await.expect("a leaf may read the log's info");
    assert!(log.purge().await.is_err(), "a leaf purged the whole audit log");
    let mut bucket = js.get_stream("KV_presence").await.unwrap();
    let mut shortened = bucket.info().await.unwrap().config.clone();
    (shortened.max_age, shortened.duplicate_window) = (Duration::from_secs(60), Duration::from_secs(60));
    assert!(js.update_stream(&shortened).await.is_err(), "a leaf shortened the bucket's retention");
    assert!(js.create_stream("STOLEN").await.is_err(), "a leaf created a stream at the center");

    let operator = async_nats::jetstream::new(crate::helpers::nats_connect(&center.nats_url()).await);
    let events = operator.get_stream("PRESENCE_EVENTS").await.unwrap().cached_info().state.messages;
    assert!(events >= 1, "the audit log still holds the leaf's write");
    assert_eq!(center.health().await["status"], "ok");
    operator.update_stream(&shortened).await.expect("an operator may");
    let problems = eventually(Duration::from_secs(15), "the center reports the change", || async {
        let health = center.health().await;
        (health["status"] == "degraded").then(|| health["shared_streams"].to_string())
    })
    .await;
    assert!(problems.contains("KV_presence") && problems.contains("retention 1m"), "{problems}");
    operator.delete_stream("PRESENCE_EVENTS").await.unwrap();
    let problems = eventually(Duration::from_secs(15), "the leaf reports the missing log", || async {
        let health = leaf.health().await;
        let problems = health["shared_streams"].to_string();
        problems.contains("PRESENCE_EVENTS` is missing").then_some(problems)
    })
    .await;
    assert!(!problems.contains("KV_presence"), "a leaf does not judge the center's settings: {problems}");
    leaf.stop().await;
    center.stop().await;
}

/// What a leaf's credential allows, taken through a leaf's own server as a thief of the leaf
/// would: docs/security.md, "What a leaf may do", line by line.
#[tokio::test]
async fn what_a_stolen_leaf_credential_allows_and_what_it_does_not() {
    let center = TestApp::spawn().await;
    center.set("victim", json!({"status": "online", "message": "mine"})).await;
    let leaf = crate::helpers::leaf_app(center.config.nats.leaf_port, "leaf-stolen", "eu-west").await;
    let thief = crate::helpers::nats_connect(&leaf.nats_url()).await;
    let ask = |subject: &'static str, body: Value| {
        let thief = thief.clone();
        async move {
            let answer =
                thief.request(subject, body.to_string().into()).await.expect("a center node answers");
            serde_json::from_slice::<Value>(&answer.payload).unwrap()
        }
    };
    let write = |token: String| json!({"user": "victim", "status": "busy", "message": "forged", "ttl_secs": 60, "token": token, "node_id": "leaf-stolen"});
    // Not: have a center node write a user's presence without that user's token.
    for token in ["forged".to_string(), crate::helpers::mint("mallory")] {
        let answer = ask("$PRESENCE.write", write(token)).await;
        assert_eq!(answer, json!({"failed": {"reason": "refused"}}));
    }
    // Not: have a center node erase a user without their token.
    let answer =
        ask("$PRESENCE.erase", json!({"user": "victim", "token": crate::helpers::mint("mallory")})).await;
    assert_eq!(answer, json!({"failed": {"reason": "refused"}}));
    let (_, kept) = json_of(center.read("victim").await).await;
    assert_eq!(kept["data"]["victim"]["message"], "mine", "nothing forged, nothing erased");
    // With the user's own token it may, as for the leaf's own clients.
    let answer = ask("$PRESENCE.write", write(crate::helpers::mint("victim"))).await;
    assert!(answer.get("stored").is_some(), "{answer}");

    // Not: use the leaf's credential as a client of the center's server.
    let password = center.config.nats.leaf_password.as_ref().unwrap().expose().to_string();
    let as_client = async_nats::ConnectOptions::with_user_and_password("leaf".into(), password)
        .connect(format!("nats://127.0.0.1:{}", center.config.nats.port))
        .await;
    assert!(as_client.is_err(), "the leaf user is for leafnode links only");

    // Not: take another region's forwarded writes (tokens in them): `$PRESENCE.write` is not a
    // subject a leaf may subscribe to.
    let mut overheard = thief.subscribe("$PRESENCE.>").await.unwrap();
    thief.flush().await.unwrap();
    let other = crate::helpers::leaf_app(center.config.nats.leaf_port, "leaf-other", "us-east").await;
    assert_eq!(other.put("olga", json!({"status": "online"})).await.status(), StatusCode::OK);
    let heard =
        tokio::time::timeout(Duration::from_millis(500), futures::StreamExt::next(&mut overheard)).await;
    assert!(heard.is_err(), "a leaf overheard another region's write: {heard:?}");
    other.stop().await;

    // May (the bound): write a key of the bucket directly over the link, as its sessions do.
    let js = async_nats::jetstream::with_domain(thief.clone(), "center");
    let kv = js.get_key_value("presence").await.unwrap();
    let forged = crate::helpers::stored_value("victim", "away", "written by the leaf", 60);
    assert!(kv.put("user.victim", forged).await.is_ok(), "a leaf may write records directly");
    leaf.stop().await;
    center.stop().await;
}
