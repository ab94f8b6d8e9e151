//! Parts every carehub connector and pipeline shares: the internal events that
//! are both a log line and a metric, a secret type that never prints, and
//! where the external test corpus is.

pub mod corpus;
pub mod health;
pub mod internal_events;
pub mod sensitive;

pub use health::Health;
pub use sensitive::{REDACTED, SensitiveString, is_secret_setting};

/// `#[serde(default = "carehub_core::default_true")]`: the default of every
/// `enabled`-like option of every crate's configuration, in one place.
pub const fn default_true() -> bool {
    true
}
