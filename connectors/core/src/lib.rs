//! Parts every carehub connector and pipeline shares: the internal events that
//! are both a log line and a metric, a secret type that never prints, and
//! where the external test corpus is.

pub mod corpus;
pub mod health;
pub mod internal_events;
pub mod sensitive;

pub use health::Health;
pub use sensitive::{REDACTED, SensitiveString, is_secret_setting};
