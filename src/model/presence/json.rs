//! A view written as JSON by hand, byte for byte what its `Serialize` writes (checked in the
//! tests): every read writes one per user, and serde's machinery (keys escaped like any string,
//! a call per field) was about a tenth of a cached GET's instructions (BENCHMARKS.md, "Issue 27").

use chrono::{DateTime, Utc};

use super::{Presence, time::Millis};
use crate::model::device::DeviceKind;

impl Presence<'_> {
    /// Appends the presence's JSON to `out`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"user_id\":");
        string(out, &self.user_id);
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.push(b'"');
        if let Some(message) = &self.message {
            out.extend_from_slice(b",\"message\":");
            string(out, message);
        }
        // The two are mostly the same instant (a write sets both): written once, copied once.
        let mut written: Option<(&DateTime<Utc>, std::ops::Range<usize>)> = None;
        for (key, t) in [(&b",\"last_seen\":"[..], &self.last_seen), (b",\"updated_at\":", &self.updated_at)]
        {
            if let Some(t) = t {
                out.extend_from_slice(key);
                match &written {
                    Some((same, text)) if *same == t => out.extend_from_within(text.clone()),
                    _ => {
                        let start = out.len();
                        time(out, t);
                        written = Some((t, start..out.len()));
                    }
                }
            }
        }
        if let Some(node) = &self.node_id {
            out.extend_from_slice(b",\"node_id\":");
            string(out, node);
        }
        if let Some(ttl) = self.ttl {
            out.extend_from_slice(b",\"ttl\":");
            out.extend_from_slice(itoa::Buffer::new().format(ttl).as_bytes());
        }
        if let Some(devices) = &self.devices {
            out.extend_from_slice(b",\"devices\":{");
            for (i, (kind, status)) in devices.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(kind_name(*kind).as_bytes());
                out.extend_from_slice(b"\":\"");
                out.extend_from_slice(status.as_str().as_bytes());
                out.push(b'"');
            }
            out.push(b'}');
        }
        out.push(b'}');
    }
}

/// `text` as a JSON string, escaped as serde_json escapes (only `"`, `\` and control characters;
/// serde_json itself writes the rare string that has one).
pub(crate) fn string(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, text).expect("a string is written to a Vec");
    }
}

fn time(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    match Millis::of(t) {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        None => string(out, &super::millis(t)),
    }
}

fn kind_name(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Web => "web",
        DeviceKind::Mobile => "mobile",
        DeviceKind::Desktop => "desktop",
        DeviceKind::Other => "other",
    }
}
