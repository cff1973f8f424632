//! JWT: every token failure is the same 401, another user's token is 403, and nothing is stored.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ISSUER, SECRET, TestApp, assert_error, json_of, mint};

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn claims() -> Value {
    json!({"sub": "dave", "iat": now(), "exp": now() + 600, "iss": ISSUER})
}

fn sign(alg: Algorithm, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn without(key: &str) -> Value {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(key);
    c
}

fn with(key: &str, value: Value) -> Value {
    let mut c = claims();
    c[key] = value;
    c
}

trait Merged {
    fn merged(self, key: &str, value: Value) -> Value;
}

impl Merged for Value {
    fn merged(mut self, key: &str, value: Value) -> Value {
        self[key] = value;
        self
    }
}

/// A correctly signed token whose header marks an extension as critical (RFC 7515 4.1.11).
fn critical(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp".into()]);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

#[tokio::test]
async fn every_bad_token_is_the_same_401_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let url = app.url("/api/v2/presence/dave");
    let body = json!({"status": "online"});
    let tokens: Vec<(&str, String)> = vec![
        ("malformed", "not.a.jwt".into()),
        ("garbage", "abc".into()),
        ("wrong signature", sign(Algorithm::HS256, &claims(), "another-secret-0123456789-0123456789")),
        ("alg none", unsigned(&claims())),
        ("HS384", sign(Algorithm::HS384, &claims(), SECRET)),
        ("expired", sign(Algorithm::HS256, &with("exp", json!(now() - 120)), SECRET)),
        ("future nbf", sign(Algorithm::HS256, &with("nbf", json!(now() + 120)), SECRET)),
        ("future iat", sign(Algorithm::HS256, &with("iat", json!(now() + 120)), SECRET)),
        ("wrong issuer", sign(Algorithm::HS256, &with("iss", json!("someone-else")), SECRET)),
        ("no sub", sign(Algorithm::HS256, &without("sub"), SECRET)),
        ("no exp", sign(Algorithm::HS256, &without("exp"), SECRET)),
        ("no iat", sign(Algorithm::HS256, &without("iat"), SECRET)),
        ("no iss", sign(Algorithm::HS256, &without("iss"), SECRET)),
        (
            "absurd lifetime",
            sign(Algorithm::HS256, &with("iat", json!(0)).merged("exp", json!(u64::MAX)), SECRET),
        ),
        ("31 days", sign(Algorithm::HS256, &with("exp", json!(now() + 31 * 86_400)), SECRET)),
        ("critical extension", critical(&claims())),
        ("an audience nobody configured", sign(Algorithm::HS256, &with("aud", json!("elsewhere")), SECRET)),
    ];
    let mut bodies = Vec::new();
    for (what, token) in &tokens {
        let response = app.http.put(&url).bearer_auth(token).json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{what}");
        bodies.push(assert_error(response, StatusCode::UNAUTHORIZED).await);
    }
    let missing = app.http.put(&url).json(&body).send().await.unwrap();
    bodies.push(assert_error(missing, StatusCode::UNAUTHORIZED).await);
    let basic =
        app.http.put(&url).header("authorization", "Basic ZGF2ZTpwdw==").json(&body).send().await.unwrap();
    bodies.push(assert_error(basic, StatusCode::UNAUTHORIZED).await);
    let huge = format!("Bearer {}{}", mint("dave"), "A".repeat(9 * 1024));
    let oversize = app.http.put(&url).header("authorization", huge).json(&body).send().await.unwrap();
    bodies.push(assert_error(oversize, StatusCode::UNAUTHORIZED).await);
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one uniform body: {bodies:?}");

    assert_error(app.get("/api/v2/presence/dave").await, StatusCode::NOT_FOUND).await;
    app.stop().await;
}

#[tokio::test]
async fn a_token_writes_only_its_own_subject() {
    let app = TestApp::spawn().await;
    let response = app.put_as("erin", &mint("dave"), json!({"status": "online"})).await;
    assert_error(response, StatusCode::FORBIDDEN).await;
    assert_error(app.get("/api/v2/presence/erin").await, StatusCode::NOT_FOUND).await;
    let (status, _) = json_of(app.put_as("dave", &mint("dave"), json!({"status": "online"})).await).await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_token_within_the_leeway_and_with_a_past_nbf_is_accepted() {
    let app = TestApp::spawn().await;
    let token = sign(Algorithm::HS256, &with("nbf", json!(now() - 10)), SECRET);
    assert_eq!(app.put_as("dave", &token, json!({"status": "online"})).await.status(), StatusCode::OK);
    let token = sign(Algorithm::HS256, &with("exp", json!(now() - 2)), SECRET);
    assert_eq!(
        app.put_as("dave", &token, json!({"status": "away"})).await.status(),
        StatusCode::OK,
        "2 s of clock skew is tolerated"
    );
    app.stop().await;
}

#[tokio::test]
async fn reads_need_no_token() {
    let app = TestApp::spawn().await;
    app.set("frank", json!({"status": "online"})).await;
    let response =
        app.http.get(app.url("/api/v2/presence/frank")).bearer_auth("garbage").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "a bad token does not spoil a public read");
    app.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = TestApp::spawn().await;
    let url = app.url("/api/v2/presence/dave");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let header = format!("{scheme} {}", mint("dave"));
        let response = app
            .http
            .put(&url)
            .header("authorization", header)
            .json(&json!({"status": "online"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{scheme}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_configured_audience_is_required() {
    let app = TestApp::spawn_with(|c| c.auth.jwt_audience = Some("presence-api".into())).await;
    let body = json!({"status": "online"});
    let none = sign(Algorithm::HS256, &claims(), SECRET);
    assert_error(app.put_as("dave", &none, body.clone()).await, StatusCode::UNAUTHORIZED).await;
    let wrong = sign(Algorithm::HS256, &with("aud", json!("another-api")), SECRET);
    assert_error(app.put_as("dave", &wrong, body.clone()).await, StatusCode::UNAUTHORIZED).await;
    let right = sign(Algorithm::HS256, &with("aud", json!("presence-api")), SECRET);
    assert_eq!(app.put_as("dave", &right, body).await.status(), StatusCode::OK);
    app.stop().await;
}

/// Rotating the JWT secret without logging everyone out: the old secret as
/// `auth.previous_jwt_secret` keeps its tokens valid (and counted), new tokens use the new one,
/// and once it is removed the old tokens stop working.
#[tokio::test]
async fn a_rotated_secret_keeps_old_tokens_valid_while_it_is_the_previous_one() {
    const NEW_SECRET: &str = "rotated-secret-0123456789-0123456789-abcd";
    let old_token = sign(Algorithm::HS256, &claims(), SECRET);
    let new_token = sign(Algorithm::HS256, &claims(), NEW_SECRET);
    let stranger = sign(Algorithm::HS256, &claims(), "some-other-secret-0123456789-0123456789");
    let body = json!({"status": "online"});

    let rotating = TestApp::spawn_with(|c| {
        c.auth.jwt_secret = Some(presence::config::Secret::new(NEW_SECRET.into()));
        c.auth.previous_jwt_secret = Some(presence::config::Secret::new(SECRET.into()));
    })
    .await;
    assert_eq!(rotating.put_as("dave", &old_token, body.clone()).await.status(), StatusCode::OK);
    assert_eq!(rotating.put_as("dave", &new_token, body.clone()).await.status(), StatusCode::OK);
    assert_error(rotating.put_as("dave", &stranger, body.clone()).await, StatusCode::UNAUTHORIZED).await;
    let metrics = rotating.metrics().await;
    assert!(
        metrics.contains("presence_tokens_previous_secret_total 1\n"),
        "one old token counted:\n{metrics}"
    );
    rotating.stop().await;

    let rotated = TestApp::spawn_with(|c| {
        c.auth.jwt_secret = Some(presence::config::Secret::new(NEW_SECRET.into()));
    })
    .await;
    assert_error(rotated.put_as("dave", &old_token, body.clone()).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(rotated.put_as("dave", &new_token, body).await.status(), StatusCode::OK);
    rotated.stop().await;
}
