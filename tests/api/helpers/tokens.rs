//! Tokens signed with the test secret.

use std::time::Duration;

use presence::{
    auth::Authenticator,
    config::{Secret, from_sources},
};

pub(crate) const SECRET: &str = "test-secret-0123456789-0123456789-abcdef";
pub(crate) const ISSUER: &str = "presence-service";

/// A valid token for `user`, for ten minutes.
pub(crate) fn mint(user: &str) -> String {
    let config = from_sources(None, &[]).unwrap();
    Authenticator::new(&Secret::new(SECRET.into()), &config.auth).mint(user, Duration::from_secs(600))
}

/// A valid token for `user` that may join and read the rooms `patterns` match, for ten minutes.
pub(crate) fn mint_rooms(user: &str, patterns: &[&str]) -> String {
    let config = from_sources(None, &[]).unwrap();
    let rooms: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    Authenticator::new(&Secret::new(SECRET.into()), &config.auth).mint_with_rooms(
        user,
        Duration::from_secs(600),
        &rooms,
    )
}
