//! Webhooks (docs/webhooks.md): the application's endpoints, each a name, a URL and a Standard
//! Webhooks secret. `sign` makes the signatures, `address` says which addresses an endpoint may
//! reach, `send` makes one signed request; `event` turns an audit-log event into what endpoints
//! are told, and `deliver` delivers them from the audit log, at least once, from the center.
//! `presence webhooks test NAME` sends a signed test event through the same path.

mod address;
mod deliver;
mod event;
mod send;
mod sign;

pub(crate) use deliver::start;
pub(crate) use send::Endpoint;
