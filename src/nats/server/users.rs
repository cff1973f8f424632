//! Who may connect to the embedded server, and what each may do: the `authorization` block of its
//! configuration, every password in it a bcrypt hash.

use crate::config::{
    CENTER_DOMAIN, Config, FORWARD_ERASE_SUBJECT, FORWARD_SUBJECT, LEAF_USER, NodeType, SERVICE_USER, Secret,
};

/// One entry of the server's `users`: a password (with the bcrypt cost to hash it at) unless a
/// certificate names the user, and what follows it (permissions, connection types).
struct User<'a> {
    name: &'a str,
    password: Option<(&'a Secret, u32)>,
    rights: &'a str,
}

/// Who may use the client port: the service itself, the configured operators (everything), and
/// the event readers (they may only subscribe to presence events and heartbeats). Nobody else.
/// On a center, also the leaves, over leafnode links only and with a leaf's permissions: by
/// certificate with `nats.leaf_tls`, else by the leaf password.
pub(super) fn authorization(config: &Config, password: &Secret, leaf_password: Option<&Secret>) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let reader = ", permissions: { publish: { deny: [\">\"] }, subscribe: { allow: \
                  [\"presence.update.>\", \"presence.expire.>\", \"presence.sync.>\"] } }";
    let leaf =
        format!(", permissions: {}, allowed_connection_types: [\"LEAFNODE\"]", leaf_permissions(config));
    let chosen = |name, password, rights| User { name, password: Some((password, BCRYPT_COST)), rights };
    let mut users = vec![User { name: SERVICE_USER, password: Some((password, GENERATED_COST)), rights: "" }];
    users.extend(config.nats.operators.iter().map(|op| chosen(&op.user, &op.password, "")));
    users.extend(config.nats.event_readers.iter().map(|r| chosen(&r.user, &r.password, reader)));
    if config.service.node_type == NodeType::Center {
        match (&config.nats.leaf_tls, leaf_password) {
            (Some(tls), _) => users.extend(tls.leaves.iter().map(|name| User {
                name: name.trim(),
                password: None,
                rights: &leaf,
            })),
            (None, Some(leaf_password)) => users.push(chosen(LEAF_USER, leaf_password, &leaf)),
            (None, None) => {}
        }
    }
    // Each hash on a thread of its own: at cost 10 one takes tens of milliseconds, and the server
    // starts (and restores its streams) only once they are all written.
    let hashes: Vec<Option<String>> = std::thread::scope(|scope| {
        let running: Vec<_> = users
            .iter()
            .map(|user| user.password.map(|(password, cost)| scope.spawn(move || hashed(password, cost))))
            .collect();
        running.into_iter().map(|h| h.map(|h| h.join().expect("hashing does not panic"))).collect()
    });
    let lines: String = users
        .iter()
        .zip(hashes)
        .map(|(User { name, rights, .. }, hash)| match hash {
            Some(hash) => format!("    {{ user: {}, password: {}{rights} }}\n", quote(name), quote(&hash)),
            None => format!("    {{ user: {}{rights} }}\n", quote(name)),
        })
        .collect();
    format!("authorization {{\n  users = [\n{lines}  ]\n}}\n")
}

/// A password as the server's configuration holds it: a bcrypt hash of `cost`, which lets the
/// server check a password without the file holding one. Never a truncated one: configured
/// passwords are at most [`crate::config::MAX_PASSWORD_BYTES`] (validated), generated ones 64.
fn hashed(password: &Secret, cost: u32) -> String {
    bcrypt::non_truncating_hash_with_result(password.expose(), cost)
        .expect("passwords are validated to fit bcrypt")
        .format_for_version(bcrypt::Version::TwoA)
}

/// bcrypt's cost for a password a person chose, 2^10 rounds: the lowest commonly advised. The
/// server checks a password at each connection.
const BCRYPT_COST: u32 = 10;
/// bcrypt's least cost, for the service's own password: 64 random characters, which no number of
/// rounds makes harder to guess. The server checks it at every connection the service makes: at
/// cost 10 about 70 ms of CPU each, and a start makes two (the readiness probe, then the
/// service's connection) between the server's streams being restored and the node serving.
const GENERATED_COST: u32 = 4;

/// What a leaf may send to the center and receive from it: the presence bucket's and the audit
/// log's JetStream API in the center's domain (information, direct gets, consumers, the put
/// acknowledgements), presence events and heartbeats, and replies; its writes and erasures for
/// the center to carry out; and what the leaf's copy of the bucket (a mirror) receives. Not the
/// rest of the JetStream API (no stream is created, updated, purged or deleted from a leaf: a
/// purge request's filter is in its body, which permissions cannot see), nor any other subject.
fn leaf_permissions(config: &Config) -> String {
    let bucket = format!("KV_{}", config.nats.kv.bucket);
    let events = &config.events.stream;
    let api = format!("$JS.{CENTER_DOMAIN}.API");
    let mut publish = vec![format!("{api}.INFO"), "presence.>".to_string(), "_INBOX.>".to_string()];
    for stream in [bucket.as_str(), events.as_str()] {
        publish.extend([
            format!("{api}.STREAM.INFO.{stream}"),
            format!("{api}.STREAM.MSG.GET.{stream}"),
            format!("{api}.DIRECT.GET.{stream}"),
            format!("{api}.DIRECT.GET.{stream}.>"),
            format!("{api}.CONSUMER.CREATE.{stream}"),
            format!("{api}.CONSUMER.CREATE.{stream}.>"),
            format!("{api}.CONSUMER.DELETE.{stream}.>"),
            format!("{api}.CONSUMER.INFO.{stream}.>"),
            format!("{api}.CONSUMER.MSG.NEXT.{stream}.>"),
            format!("$JS.ACK.{stream}.>"),
        ]);
    }
    publish.extend([FORWARD_SUBJECT.to_string(), FORWARD_ERASE_SUBJECT.to_string()]);
    publish.push(format!("{api}.$KV.{}.>", config.nats.kv.bucket));
    publish.push("$JS.FC.>".to_string());
    let list = |subjects: &[String]| {
        subjects
            .iter()
            .map(|s| serde_json::to_string(s).expect("strings serialize"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The region's copy (a mirror, run by the leaf's server): its consumer's deliveries and the
    // answer to its consumer creation.
    let subscribe = ["_INBOX.>", "presence.>", "$JS.M.>", "$JSC.R.>"].map(String::from);
    format!("{{ publish: [{}], subscribe: [{}] }}", list(&publish), list(&subscribe))
}
