//! Webhooks (docs/webhooks.md): the application's endpoints, each a name, a URL and a Standard
//! Webhooks secret. `sign` makes the signatures, `address` says which addresses an endpoint may
//! reach, `send` makes one signed request. `presence webhooks test NAME` sends a signed test
//! event through them.

mod address;
mod send;
mod sign;

pub(crate) use send::Endpoint;
