//! Serde helpers for the human-friendly units of the YAML file: durations such as `3600s`, `24h`
//! or `30d` (or a bare number of seconds) and byte sizes such as `1GB` (or a bare number of bytes).

use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};

/// A number or a string; YAML gives us either for `ttl: 3600` and `ttl: 3600s`.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

/// Parses `3600s`, `24h`, `1h 30m`, `30d` or `3600` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 3600s, 24h or 30d"))
}

/// Parses `1GB`, `512MiB` or `1000000` (bytes).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("`{text}` is not a byte size ({e}); write e.g. 1000000, 512MiB or 1GB"))
}

pub mod duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match NumberOrText::deserialize(d)? {
            NumberOrText::Number(secs) => Ok(Duration::from_secs(secs)),
            NumberOrText::Text(text) => parse_duration(&text).map_err(D::Error::custom),
        }
    }
}

/// A list of durations (`[5s, 5m, 30m]`), when given.
pub mod durations {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Duration>>, D::Error> {
        let list = Vec::<NumberOrText>::deserialize(d)?;
        let one = |value: NumberOrText| match value {
            NumberOrText::Number(secs) => Ok(Duration::from_secs(secs)),
            NumberOrText::Text(text) => parse_duration(&text).map_err(D::Error::custom),
        };
        list.into_iter().map(one).collect::<Result<Vec<_>, _>>().map(Some)
    }
}

pub mod bytes {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => Ok(n),
            NumberOrText::Text(text) => parse_bytes(&text).map_err(D::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_the_design_documents_notation() {
        assert_eq!(parse_duration("3600s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn byte_sizes_in_the_design_documents_notation() {
        assert_eq!(parse_bytes("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_bytes("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_bytes("1000000"), Ok(1_000_000));
        assert!(parse_bytes("lots").is_err());
    }
}

/// A list of addresses (`10.0.0.7`) or networks (`10.0.0.0/8`, `fd00::/8`).
pub mod networks {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| parse_network(text).map_err(D::Error::custom))
            .collect()
    }
}

/// Parses an address (a network of one) or a network in CIDR notation.
pub fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{text}` is neither an IP address nor a network such as 10.0.0.0/8"))
}
