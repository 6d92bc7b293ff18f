//! Client side of the rump stack-server protocol.
//!
//! * [`url`]: `RUMP_SERVER` URLs.
//! * [`retry`]: the `RUMPHIJACK_RETRYCONNECT` reconnect policy.
//! * [`protocol`]: frames and messages.
//! * [`wire`]: frames over a Unix socket, with descriptors attached.
//! * [`client`]: a session with a server, reconnecting as the policy says.

pub mod client;
pub mod protocol;
pub mod retry;
mod sys;
pub mod url;
pub mod wire;

pub use client::{CallError, Client, ConnectError, ConnectionSetup, Endpoint, Identity};
pub use retry::{Backoff, RetryError, RetryPolicy};
pub use url::{ServerUrl, UrlError};
