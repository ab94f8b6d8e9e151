use rdkafka::producer::FutureProducer;

use crate::{KafkaConfig, Result};

/// A producer that writes each record exactly once per partition, in order
/// (`enable.idempotence`), and reports success only when every in-sync
/// replica has it (`acks=all`).
pub fn idempotent_producer(cfg: &KafkaConfig) -> Result<FutureProducer> {
    Ok(cfg
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", cfg.message_timeout_ms.to_string())
        .set("linger.ms", "2")
        .create()?)
}
