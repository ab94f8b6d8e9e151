use std::time::Duration;

use metrics::{counter, gauge, histogram};

use super::{InternalEvent, Stage, metric};

/// A message arrived at a connector or pipeline.
#[derive(Debug)]
pub struct MessageReceived<'a> {
    pub connector: &'a str,
    pub message_type: &'a str,
}

impl InternalEvent for MessageReceived<'_> {
    fn emit(self) {
        tracing::debug!(
            connector = self.connector,
            message_type = self.message_type,
            "message received"
        );
        counter!(metric::MESSAGES_RECEIVED, "connector" => self.connector.to_owned(), "message_type" => self.message_type.to_owned())
            .increment(1);
    }
}

/// A message left through a connector (Kafka record, MLLP message, HTTP call).
#[derive(Debug)]
pub struct MessageSent<'a> {
    pub connector: &'a str,
    pub message_type: &'a str,
    pub count: u64,
}

impl InternalEvent for MessageSent<'_> {
    fn emit(self) {
        counter!(metric::MESSAGES_SENT, "connector" => self.connector.to_owned(), "message_type" => self.message_type.to_owned())
            .increment(self.count);
    }
}

/// A message or event was seen before and had no second effect.
#[derive(Debug)]
pub struct DuplicateSkipped<'a> {
    pub connector: &'a str,
    pub event_id: &'a str,
}

impl InternalEvent for DuplicateSkipped<'_> {
    fn emit(self) {
        tracing::info!(
            connector = self.connector,
            event_id = self.event_id,
            "duplicate skipped"
        );
        counter!(metric::MESSAGES_DUPLICATE, "connector" => self.connector.to_owned()).increment(1);
    }
}

/// A pipeline finished handling one message.
#[derive(Debug)]
pub struct MessageProcessed<'a> {
    pub pipeline: &'a str,
    pub message_type: &'a str,
    pub elapsed: Duration,
}

impl InternalEvent for MessageProcessed<'_> {
    fn emit(self) {
        histogram!(metric::PROCESSING_SECONDS, "pipeline" => self.pipeline.to_owned(), "message_type" => self.message_type.to_owned())
            .record(self.elapsed.as_secs_f64());
    }
}

/// A record went to the dead letters.
#[derive(Debug)]
pub struct DeadLettered<'a> {
    pub pipeline: &'a str,
    pub error_code: &'a str,
    pub dead_letter_id: i64,
}

impl InternalEvent for DeadLettered<'_> {
    fn emit(self) {
        tracing::warn!(
            pipeline = self.pipeline,
            error_code = self.error_code,
            dead_letter_id = self.dead_letter_id,
            "record dead-lettered"
        );
        counter!(metric::DEAD_LETTERS, "pipeline" => self.pipeline.to_owned(), "error_code" => self.error_code.to_owned())
            .increment(1);
    }
}

/// A component failed at some stage; `error_code` is a bounded identifier.
pub struct ComponentError<'a> {
    pub component: &'a str,
    pub stage: Stage,
    pub error_code: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl std::fmt::Debug for ComponentError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentError")
            .field("component", &self.component)
            .field("error_code", &self.error_code)
            .finish_non_exhaustive()
    }
}

impl InternalEvent for ComponentError<'_> {
    fn emit(self) {
        tracing::error!(
            component = self.component,
            stage = self.stage.as_str(),
            error_code = self.error_code,
            error = %self.error,
            "component error"
        );
        counter!(
            metric::ERRORS,
            "component" => self.component.to_owned(),
            "stage" => self.stage.as_str(),
            "error_code" => self.error_code.to_owned()
        )
        .increment(1);
    }
}

/// The outbox relay published a batch; `backlog` is what remains unsent.
#[derive(Debug)]
pub struct OutboxPublished {
    pub count: u64,
    /// Rows not yet published, when counted.
    pub backlog: Option<i64>,
}

impl InternalEvent for OutboxPublished {
    fn emit(self) {
        if self.count > 0 {
            tracing::debug!(count = self.count, "outbox batch published");
        }
        counter!(metric::OUTBOX_PUBLISHED).increment(self.count);
        if let Some(backlog) = self.backlog {
            gauge!(metric::OUTBOX_BACKLOG).set(backlog as f64);
        }
    }
}

/// Records between a consumer group's position and the end of a partition.
#[derive(Debug)]
pub struct ConsumerLag<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub lag: i64,
}

impl InternalEvent for ConsumerLag<'_> {
    fn emit(self) {
        gauge!(
            metric::CONSUMER_LAG,
            "group" => self.group.to_owned(),
            "topic" => self.topic.to_owned(),
            "partition" => self.partition.to_string()
        )
        .set(self.lag as f64);
    }
}

/// A message came again under a key already stored, with other content (its
/// content hash differs): recorded in `message_conflict`, never dropped
/// silently. The connector's policy decides what follows: held for review
/// (`outcome="held"`, not applied) or stored as a new version
/// (`outcome="new_version"`).
#[derive(Debug)]
pub struct ChangedDuplicate<'a> {
    pub connector: &'a str,
    /// The message-store id of the copy it differs from.
    pub message_id: uuid::Uuid,
    /// The new version's message-store id, when it was applied as one.
    pub new_version: Option<uuid::Uuid>,
}

impl InternalEvent for ChangedDuplicate<'_> {
    fn emit(self) {
        let outcome = match self.new_version {
            Some(version) => {
                tracing::warn!(
                    connector = self.connector,
                    message_id = %self.message_id,
                    new_version = %version,
                    "changed duplicate: same key, other content; stored as a new version"
                );
                "new_version"
            }
            None => {
                tracing::warn!(
                    connector = self.connector,
                    message_id = %self.message_id,
                    "changed duplicate: same key, other content; kept for review in message_conflict"
                );
                "held"
            }
        };
        counter!(
            metric::MESSAGES_CHANGED_DUPLICATE,
            "connector" => self.connector.to_owned(),
            "outcome" => outcome
        )
        .increment(1);
    }
}

/// A pipeline's batch has been retrying (storage failing) for `seconds`;
/// 0 once it moves again. An alert fires on `carehub_pipeline_stalled_seconds > N`.
#[derive(Debug)]
pub struct PipelineStalled<'a> {
    pub pipeline: &'a str,
    pub seconds: f64,
}

impl InternalEvent for PipelineStalled<'_> {
    fn emit(self) {
        gauge!(metric::PIPELINE_STALLED_SECONDS, "pipeline" => self.pipeline.to_owned()).set(self.seconds);
    }
}
