use rdkafka::producer::FutureProducer;

use crate::{KafkaConfig, Result};

/// A producer that writes each record exactly once per partition, in order
/// (`enable.idempotence`), and reports success only when every in-sync
/// replica has it (`acks=all`). Records wait up to 2 ms to be batched.
pub fn idempotent_producer(cfg: &KafkaConfig) -> Result<FutureProducer> {
    idempotent_producer_with_linger(cfg, 2)
}

/// [`idempotent_producer`] with another `linger.ms`: 0 for a sender that
/// waits for each delivery before it answers someone (the MLLP listener),
/// where batching happens in the caller instead.
pub fn idempotent_producer_with_linger(cfg: &KafkaConfig, linger_ms: u32) -> Result<FutureProducer> {
    Ok(cfg
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", cfg.message_timeout_ms.to_string())
        .set("linger.ms", linger_ms.to_string())
        .create()?)
}
