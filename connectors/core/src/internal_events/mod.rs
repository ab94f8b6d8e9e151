//! Internal events: each `emit` writes the log line and updates the metric
//! together, so dashboards and logs cannot disagree. Metric names follow
//! `carehub_<name>_<unit>_total`; labels hold bounded values only (connector,
//! message type, error code), never ids, names or free text.

mod backbone;
mod hl7;
pub use backbone::*;
pub use hl7::*;

/// One thing a component reports, in vector's shape: `emit` writes its log
/// line and updates its metric together, so logs and dashboards cannot
/// disagree. Each component emits what it received, sent and failed at
/// (`MessageReceived`, `MessageSent`, `ComponentError`, …); labels hold
/// bounded values only (component, contract type, error code), never ids
/// or a sender's own text. Tests check a running hub's `/metrics` for them
/// (`tests/common::assert_component_events`).
pub trait InternalEvent: Sized {
    fn emit(self);
}

/// `event.emit()` without the trait in scope: each event also has it as its own method.
macro_rules! emit_inherent {
    ($($event:ty),* $(,)?) => {
        $(impl $event {
            pub fn emit(self) {
                <Self as InternalEvent>::emit(self)
            }
        })*
    };
}

emit_inherent!(
    MessageReceived<'_>,
    MessageSent<'_>,
    DuplicateSkipped<'_>,
    MessageProcessed<'_>,
    DeadLettered<'_>,
    ComponentError<'_>,
    OutboxPublished,
    ConsumerLag<'_>,
    ChangedDuplicate<'_>,
    PipelineStalled<'_>,
    Hl7AckSent<'_>,
    Hl7AckReceived<'_>,
    Hl7Connections<'_>,
    Hl7SegmentsUnmapped<'_>,
);

/// Metric names, in one place so dashboards have one list to read.
pub mod metric {
    pub const MESSAGES_RECEIVED: &str = "carehub_messages_received_total";
    pub const MESSAGES_SENT: &str = "carehub_messages_sent_total";
    pub const MESSAGES_DUPLICATE: &str = "carehub_messages_duplicate_total";
    pub const MESSAGES_CHANGED_DUPLICATE: &str = "carehub_messages_changed_duplicate_total";
    pub const PIPELINE_STALLED_SECONDS: &str = "carehub_pipeline_stalled_seconds";
    pub const PROCESSING_SECONDS: &str = "carehub_processing_duration_seconds";
    pub const DEAD_LETTERS: &str = "carehub_dead_letters_total";
    pub const OUTBOX_BACKLOG: &str = "carehub_outbox_backlog_events";
    pub const OUTBOX_PUBLISHED: &str = "carehub_outbox_published_events_total";
    pub const CONSUMER_LAG: &str = "carehub_consumer_lag_records";
    pub const ERRORS: &str = "carehub_component_errors_total";
    pub const HL7_ACKS_SENT: &str = "carehub_hl7_acks_sent_total";
    pub const HL7_ACKS_RECEIVED: &str = "carehub_hl7_acks_received_total";
    pub const HL7_CONNECTIONS: &str = "carehub_hl7_connections_open";
    pub const HL7_UNMAPPED_SEGMENTS: &str = "carehub_hl7_unmapped_segments_total";
}

/// Where in a component an error happened (vector's instrumentation spec).
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Receiving,
    Processing,
    Sending,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Receiving => "receiving",
            Stage::Processing => "processing",
            Stage::Sending => "sending",
        }
    }
}
