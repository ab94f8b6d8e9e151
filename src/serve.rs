//! `carehub serve`: the operations endpoint first, then, once PostgreSQL and the
//! broker answer, migrations, topics, the outbox relay and the pipelines.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use backon::{BackoffBuilder, ExponentialBuilder};
use carehub_connector_kit::Runtime;
use carehub_kafka::{OutboxRelay, TopicSpec};
use carehub_schema::MessageStore;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ])
        .context("metric buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    let pool = carehub_schema::db::pool(&cfg.database).context("database.url")?;
    let producer = carehub_kafka::idempotent_producer(&cfg.kafka).context("creating the Kafka producer")?;

    let (shutdown_tx, shutdown) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("binding http.listen = {}", cfg.http.listen))?;
    tracing::info!(listen = %cfg.http.listen, "operations endpoint listening");
    let health = carehub_core::Health::default();
    // Not ready until the migrations ran and every component below is up.
    health.register("startup");
    let registry = crate::registry::registry(&cfg);
    for c in registry.iter().filter(|c| c.enabled()) {
        for name in c.health() {
            health.register(&name);
        }
    }
    let app = crate::http::router(crate::http::OpsState {
        pool: pool.clone(),
        producer: producer.clone(),
        metrics,
        health: health.clone(),
        stall_limit: Duration::from_secs(cfg.pipelines.retry.stall_after_secs),
    });
    let mut http_shutdown = shutdown.clone();
    let mut tasks = JoinSet::new();
    // The kit's accept loop and limits, as every listener: a connection cap
    // and a request-head deadline (the probes and scrapers are few).
    let ops_limits = carehub_connector_kit::http::HttpLimits {
        max_connections: 64,
        ..Default::default()
    };
    tasks.spawn(async move {
        let stopped = async move {
            let _ = http_shutdown.changed().await;
        };
        // Errors (an unknown path, say) are JSON, as on every non-FHIR listener.
        let app = carehub_connector_kit::http::protect(app, &ops_limits, carehub_connector_kit::http::JsonErrors);
        if let Err(e) = carehub_connector_kit::http::serve(listener, app, &ops_limits, stopped).await {
            tracing::error!(error = %e, "the operations endpoint stopped");
        }
    });

    let grace = Duration::from_secs(cfg.shutdown.grace_secs);
    let stop = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(grace_secs = grace.as_secs(), "shutting down");
        let _ = shutdown_tx.send(true);
        // Whatever is down (a broker that never answers a consumer's close,
        // a producer that cannot flush), the process ends within the grace:
        // what was acknowledged is stored, and what was applied but not yet
        // committed to the broker is redelivered and found applied. A plain
        // thread, so that a runtime stuck in a blocking call cannot hold it.
        std::thread::spawn(move || {
            std::thread::sleep(grace);
            eprintln!("carehub: shutdown grace of {}s passed; exiting now", grace.as_secs());
            std::process::exit(0);
        });
    });

    // Dependencies may come up after carehub: wait for them, loudly, with backoff.
    let db = carehub_schema::db::describe(&cfg.database);
    let mut sd = shutdown.clone();
    let ready = retry_until(&mut sd, "PostgreSQL", &db, || async {
        carehub_schema::migrate(&pool).await.map_err(anyhow::Error::from)
    })
    .await;
    if !ready {
        return drain(tasks).await;
    }
    tracing::info!(database = %db, "migrations applied");
    let topics: Vec<TopicSpec> = registry.topics().into_iter().map(TopicSpec::new).collect();
    let ready = retry_until(&mut sd, "Kafka broker", &cfg.kafka.brokers, || async {
        carehub_kafka::ensure_topics(&cfg.kafka, &topics)
            .await
            .map_err(anyhow::Error::from)
    })
    .await;
    if !ready {
        return drain(tasks).await;
    }
    tracing::info!(brokers = %cfg.kafka.brokers, "topics ready");

    tasks.spawn(OutboxRelay::new(pool.clone(), producer.clone(), cfg.outbox.clone()).run(shutdown.clone()));
    let runtime = Runtime {
        pool: pool.clone(),
        producer: producer.clone(),
        kafka: cfg.kafka.clone(),
        retry: cfg.pipelines.retry.clone(),
        health: health.clone(),
        shutdown: shutdown.clone(),
    };
    for component in registry.iter().filter(|c| c.enabled()) {
        let name = component.name();
        let started = component
            .start(&runtime)
            .await
            .map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
        for task in started {
            tasks.spawn(task);
        }
    }
    tasks.spawn(maintain_partitions(pool.clone(), shutdown.clone()));
    health.set_ready("startup", true);
    tracing::info!("carehub running");

    let result = drain(tasks).await;
    stop.abort();
    result
}

async fn drain(mut tasks: JoinSet<()>) -> anyhow::Result<()> {
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res {
            tracing::error!(error = %e, "task failed");
        }
    }
    Ok(())
}

/// Calls `op` until it succeeds, with exponential backoff (0.5 s to 30 s) and
/// one clear log line per failure. Returns false when shutdown came first.
async fn retry_until<F, Fut>(shutdown: &mut watch::Receiver<bool>, what: &str, at: &str, mut op: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
        .with_jitter()
        .build();
    loop {
        match op().await {
            Ok(()) => return true,
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::error!(
                    dependency = what,
                    at,
                    error = %format!("{e:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "{what} at {at} is not usable yet; retrying"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return false,
                }
            }
        }
    }
}

/// Creates next months' message-store partitions once a day.
async fn maintain_partitions(pool: sqlx::PgPool, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(24 * 3600)) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = MessageStore::ensure_partitions(&pool).await {
            tracing::error!(error = %e, "creating message-store partitions failed; retrying tomorrow");
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
