//! Loading the configuration in layers: built-in defaults, the YAML file, `PRESENCE_...`
//! environment variables, then command-line flags.
//!
//! `${VAR}` and `${VAR:-default}` are interpolated inside string values of the YAML file after it
//! was parsed, so that a secret full of YAML punctuation cannot change the document's structure.
//! An environment override `PRESENCE_NATS__KV__TTL=60s` sets `nats.kv.ttl`: the prefix, then the
//! key path with `__` between the levels.

use std::{net::IpAddr, path::PathBuf};

use serde_yaml_ng::{Mapping, Value};

use super::{Config, LogFormat};

const ENV_PREFIX: &str = "PRESENCE_";
/// Environment variables with the prefix that are not key overrides.
/// (The key variables are the names the documentation suggests for `${...}` in the file, and what the
/// embedded server reads.)
const ENV_RESERVED: &[&str] = &["PRESENCE_CONFIG", super::KEY_VAR, super::PREVIOUS_KEY_VAR];

/// A configuration error: which key, and why.
#[derive(Debug, thiserror::Error)]
#[error("configuration key `{key}`: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { key: key.into(), reason: reason.into() }
    }
}

/// The command line's say, applied last.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<IpAddr>,
    pub port: Option<u16>,
    pub node_id: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub nats_port: Option<u16>,
    pub leaf_port: Option<u16>,
    pub nats_url: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
}

/// Loads the configuration from `file` (if any), the process environment and `overrides`.
pub fn load(file: Option<&std::path::Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let text = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| ConfigError::new("--config", format!("cannot read {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let mut config = from_sources(text.as_deref(), &env)?;
    apply_overrides(&mut config, overrides);
    config.validate()?;
    Ok(config)
}

/// Builds a configuration from YAML text and an environment, without touching the process.
pub fn from_sources(yaml: Option<&str>, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut doc = match yaml {
        Some(text) => serde_yaml_ng::from_str::<Value>(text)
            .map_err(|e| ConfigError::new(error_key(&e), e.to_string()))?,
        None => Value::Mapping(Mapping::new()),
    };
    if doc.is_null() {
        doc = Value::Mapping(Mapping::new());
    }
    interpolate(&mut doc, &lookup, "")?;
    for (name, value) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_RESERVED.contains(&name.as_str()) || path.is_empty() {
            continue;
        }
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        set_path(&mut doc, &keys, scalar(value)).map_err(|reason| ConfigError::new(name, reason))?;
    }
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::new(if key == "." { "(top level)".into() } else { key }, e.into_inner().to_string())
    })
}

fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *slot = v.clone();
    }
}

fn apply_overrides(config: &mut Config, o: &Overrides) {
    set(&mut config.service.host, &o.host);
    set(&mut config.service.port, &o.port);
    set(&mut config.service.node_id, &o.node_id);
    set(&mut config.nats.data_dir, &o.data_dir);
    set(&mut config.nats.port, &o.nats_port);
    set(&mut config.nats.leaf_port, &o.leaf_port);
    set(&mut config.logging.level, &o.log_level);
    set(&mut config.logging.format, &o.log_format);
    if let Some(url) = &o.nats_url {
        config.nats.url = url.clone();
        config.nats.embedded = false;
    }
}

/// The YAML scalar a piece of text stands for (`60` a number, `true` a bool, else a string).
fn scalar(text: &str) -> Value {
    match serde_yaml_ng::from_str::<Value>(text) {
        Ok(v @ (Value::Bool(_) | Value::Number(_))) => v,
        Ok(Value::Null) if text.trim().is_empty() => Value::Null,
        _ => Value::String(text.to_string()),
    }
}

fn set_path(doc: &mut Value, keys: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("empty key")?;
    let mut node = doc;
    for key in parents {
        let map = node.as_mapping_mut().ok_or("a parent of this key is not a section")?;
        node = map.entry(Value::String(key.clone())).or_insert_with(|| Value::Mapping(Mapping::new()));
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
    }
    let map = node.as_mapping_mut().ok_or("a parent of this key is not a section")?;
    map.insert(Value::String(last.clone()), value);
    Ok(())
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string value. A value that is nothing but one
/// reference takes the type its text has (`port: ${PORT}` becomes a number); an unset variable
/// without a default becomes empty, which for an optional key means "not set".
fn interpolate(
    node: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    path: &str,
) -> Result<(), ConfigError> {
    match node {
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let child = if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
                interpolate(v, lookup, &child)?;
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                interpolate(v, lookup, &format!("{path}[{i}]"))?;
            }
        }
        Value::String(text) if text.contains("${") => {
            let whole = text.trim().starts_with("${")
                && text.trim().ends_with('}')
                && text.matches("${").count() == 1;
            let expanded = expand(text, lookup).map_err(|reason| ConfigError::new(path, reason))?;
            *node = if whole { scalar(&expanded) } else { Value::String(expanded) };
        }
        _ => {}
    }
    Ok(())
}

fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("unclosed `${` in value")?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{inner}}}` is not a variable reference"));
        }
        match (lookup(name), default) {
            (Some(v), _) if !v.is_empty() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            _ => {}
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn error_key(e: &serde_yaml_ng::Error) -> String {
    match e.location() {
        Some(loc) => format!("(line {}, column {})", loc.line(), loc.column()),
        None => "(file)".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_make_a_center_node() {
        let c = from_sources(None, &[]).unwrap();
        assert!(c.nats.embedded);
        assert_eq!(c.service.port, 8080);
        assert_eq!(c.nats.kv.bucket, "presence");
        c.validate().unwrap();
    }

    #[test]
    fn interpolation_keeps_types_and_punctuation() {
        let yaml =
            "service:\n  port: ${PORT}\nauth:\n  jwt_secret: ${SECRET}\n  jwt_issuer: ${ISS:-fallback}\n";
        let secret = "a: b # not a comment, {still the secret} ${x";
        let c = from_sources(Some(yaml), &env(&[("PORT", "9001"), ("SECRET", secret)])).unwrap();
        assert_eq!(c.service.port, 9001);
        assert_eq!(c.auth.jwt_secret.unwrap().expose(), secret);
        assert_eq!(c.auth.jwt_issuer, "fallback");
    }

    #[test]
    fn an_unset_secret_means_none() {
        let c = from_sources(Some("auth:\n  jwt_secret: ${JWT_SECRET}\n"), &[]).unwrap();
        assert!(c.auth.jwt_secret.is_none());
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let e = env(&[
            ("PRESENCE_NATS__KV__TTL", "60s"),
            ("PRESENCE_SERVICE__PORT", "9100"),
            ("PRESENCE_NATS__EMBEDDED", "false"),
            ("PRESENCE_CONFIG", "/ignored.yaml"),
            ("PRESENCE_JS_KEY", "a-key-for-interpolation-not-a-key-path"),
        ]);
        let c = from_sources(Some("nats:\n  kv:\n    ttl: 3600s\n"), &e).unwrap();
        assert_eq!(c.nats.kv.ttl, Duration::from_secs(60));
        assert_eq!(c.service.port, 9100);
        assert!(!c.nats.embedded);
    }

    #[test]
    fn errors_name_the_key() {
        let err = from_sources(Some("service:\n  port: lots\n"), &[]).unwrap_err();
        assert_eq!(err.key, "service.port");
        let err = from_sources(Some("nats:\n  jetstream:\n    max_file: heaps\n"), &[]).unwrap_err();
        assert_eq!(err.key, "nats.jetstream.max_file");
        let err = from_sources(Some("service:\n  prot: 1\n"), &[]).unwrap_err();
        assert!(err.reason.contains("prot"), "{err}");
        let err = from_sources(None, &env(&[("PRESENCE_CACHE__MAX_COST", "many")])).unwrap_err();
        assert_eq!(err.key, "cache.max_cost");
        let c = from_sources(Some("nats:\n  kv:\n    ttl: 30d\n"), &[]).unwrap();
        assert_eq!(c.validate().unwrap_err().key, "nats.kv.ttl");
        let c = from_sources(Some("auth:\n  jwt_secret: short\n"), &[]).unwrap();
        assert_eq!(c.validate().unwrap_err().key, "auth.jwt_secret");
    }

    #[test]
    fn bad_stream_and_cors_settings_name_their_key() {
        for (yaml, key) in [
            ("stream: { max_connections: 0 }", "stream.max_connections"),
            ("stream: { max_connections_per_ip: 0 }", "stream.max_connections_per_ip"),
            ("service: { max_connections_per_ip: 0 }", "service.max_connections_per_ip"),
            ("stream: { batch_window: 2s }", "stream.batch_window"),
            ("stream: { write_timeout: 10ms }", "stream.write_timeout"),
            ("stream: { keep_alive: 90s }", "stream.keep_alive"),
            ("sessions: { idle_after: 0s }", "sessions.idle_after"),
            ("sessions: { grace: 2h }", "sessions.grace"),
            ("sessions: { node_timeout: 2s }", "sessions.node_timeout"),
            ("sessions: { max_devices: 0 }", "sessions.max_devices"),
            ("rooms: { max_meta_bytes: 1 }", "rooms.max_meta_bytes"),
            ("rooms: { typing_ttl: 0s }", "rooms.typing_ttl"),
            ("rooms: { public: ['doc.*'] }", "rooms.public"),
            ("cache: { snapshot_interval: 500ms }", "cache.snapshot_interval"),
            (
                "service: { cors: { allowed_origins: [\"https://app.example/\"] } }",
                "service.cors.allowed_origins",
            ),
            ("service: { cors: { allowed_origins: [\"app.example\"] } }", "service.cors.allowed_origins"),
        ] {
            let c = from_sources(Some(yaml), &[]).unwrap();
            assert_eq!(c.validate().unwrap_err().key, key, "{yaml}");
        }
        let c = from_sources(Some("cache: { snapshot_interval: 0s }"), &[]).unwrap();
        assert!(c.validate().is_ok(), "0s: a snapshot only when the node stops");
        let c = from_sources(
            Some("service: { cors: { allowed_origins: [\"*\", \"https://app.example:8443\"] } }"),
            &[],
        );
        assert!(c.unwrap().validate().is_ok());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = from_sources(
            None,
            &env(&[("PRESENCE_AUTH__JWT_SECRET", "0123456789abcdef0123456789abcdef-topsecret")]),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
