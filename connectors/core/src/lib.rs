//! Parts every carehub connector and pipeline shares: the internal events that
//! are both a log line and a metric, and a secret type that never prints.

pub mod internal_events;
pub mod sensitive;

pub use sensitive::SensitiveString;
