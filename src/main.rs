//! `carehub`: the hub's one binary. `carehub --help` lists the commands.

mod commands;
mod config;
#[cfg(all(feature = "hl7", feature = "fhir"))]
mod convert;
#[cfg(feature = "fhir")]
mod fhir;
#[cfg(feature = "hl7")]
mod hl7;
mod http;
#[cfg(feature = "lab")]
mod lab;
mod registry;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

/// mimalloc, not the system allocator: the hub builds many small JSON values
/// (HL7 v2 → FHIR conversion is allocation-bound: 3,155 → 5,163 messages/s
/// per core measured with `cargo bench -p carehub-hl7-fhir --bench convert`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "carehub", version, about = "Message-driven integration hub for healthcare")]
struct Cli {
    /// Configuration file (TOML). Options can also be set as CAREHUB_<SECTION>__<KEY>.
    #[arg(long, short, global = true, env = "CAREHUB_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub: operations endpoint, migrations, topics, outbox relay, pipelines.
    Serve,
    /// Apply database migrations (harmless when already applied).
    Migrate,
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Dead letters: records that could not be handled.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Send a canonical command to the intake pipeline through Kafka.
    Intake {
        #[command(subcommand)]
        command: IntakeCommand,
    },
    #[cfg(feature = "hl7")]
    /// HL7 v2 tools: send a file over MLLP, show how a file parses and maps.
    Hl7 {
        #[command(subcommand)]
        command: Hl7Command,
    },
    #[cfg(feature = "hl7")]
    /// The canonical patients: repairs.
    Patient {
        #[command(subcommand)]
        command: PatientCommand,
    },
    #[cfg(feature = "lab")]
    /// The lab's manufacturing: a stand-in lab, an order's timeline.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    #[cfg(feature = "fhir")]
    /// FHIR endpoint tools.
    Fhir {
        #[command(subcommand)]
        command: FhirCommand,
    },
    #[cfg(feature = "fhir")]
    /// Access tokens for the FHIR endpoint.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Drop message-store partitions older than KEEP_MONTHS whole months (audited).
    Retention {
        /// Months of messages to keep, besides the current one.
        #[arg(long)]
        keep_months: i32,
        /// Who runs it, for the audit trail (default: $USER).
        #[arg(long)]
        actor: Option<String>,
    },
    /// Show everything one inbound event caused: stored message, canonical rows,
    /// audit entries and the outbound Kafka records.
    Trace {
        /// The event id printed by `carehub intake send`.
        event_id: String,
        /// Seconds to wait for the event to be processed and published.
        #[arg(long, default_value_t = 20)]
        wait: u64,
        /// Who looks, for the audit trail (default: $USER).
        #[arg(long)]
        actor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; exit 1 and name the first broken row if it does not hold.
    Verify,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters, newest first.
    List {
        /// open, replayed or discarded; all when omitted.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Who reads them, for the audit trail (default: $USER).
        #[arg(long)]
        actor: Option<String>,
    },
    /// Run a dead letter through its pipeline again, now.
    Replay {
        id: i64,
        /// Who replays it, for the audit trail (default: $USER).
        #[arg(long)]
        actor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective values (secrets redacted).
    Check,
}

#[derive(Debug, Subcommand)]
enum IntakeCommand {
    /// Wrap a JSON data file in an envelope of TYPE and produce it to the intake topic.
    Send {
        /// Event type: carehub.patient.upsert.v1 or carehub.organization.upsert.v1.
        #[arg(long = "type")]
        event_type: String,
        /// JSON file with the event's data.
        file: PathBuf,
    },
}

#[cfg(feature = "hl7")]
#[derive(Debug, Subcommand)]
enum Hl7Command {
    /// Send the messages of FILE (one, several, or a batch) over MLLP and print each ACK.
    Send {
        file: PathBuf,
        /// The receiver, HOST:PORT.
        #[arg(long)]
        to: String,
        /// Milliseconds to wait for each ACK.
        #[arg(long, default_value_t = 10_000)]
        ack_timeout_ms: u64,
        /// Attempts per message (timeouts, AE) before giving up.
        #[arg(long, default_value_t = 3)]
        max_attempts: usize,
    },
    /// Print the parsed structure of FILE as JSON, with its mapping and unmapped segments.
    Parse { file: PathBuf },
    #[cfg(all(feature = "hl7", feature = "fhir"))]
    /// Print each message of FILE as a FHIR R4 Bundle; what was not mapped goes to stderr.
    ToFhir { file: PathBuf },
    #[cfg(all(feature = "hl7", feature = "fhir"))]
    /// Convert the ms-fhir-converter corpus DIR (input/, expected/) and score
    /// it: messages converted, expected resources matched, per type.
    ScoreConversion {
        dir: PathBuf,
        /// Print, for this resource type, what each unmatched resource lacked.
        #[arg(long)]
        explain: Option<String>,
    },
    /// Listen for MLLP, print a line per message received and answer AA (a
    /// stand-in for a clinic's EHR; stores nothing).
    Receive {
        /// Address to listen on, HOST:PORT.
        #[arg(long)]
        listen: String,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
    },
}

#[cfg(feature = "fhir")]
#[derive(Debug, Subcommand)]
enum FhirCommand {
    /// Load N synthetic patients (no real person; identifiers S-<number> in
    /// urn:oid:2.999.9.1) for load tests, each creation audited.
    LoadSynthetic {
        #[arg(long)]
        patients: u64,
        /// Who loads them, for the audit trail (default: $USER).
        #[arg(long)]
        actor: Option<String>,
    },
    /// Validate FHIR R4 JSON against the R4 structure, as the endpoint does
    /// before a write: a file prints its issues (exit 1 when any); a
    /// directory with a cases.json (the FHIR validator test cases) prints how
    /// many cases the validation judges right.
    Validate { path: std::path::PathBuf },
    #[cfg(all(feature = "hl7", feature = "fhir"))]
    /// Build an HL7 v2 message from the resources of a FHIR Bundle in FILE:
    /// ADT_A08 (Patient), ORU_R01 (DiagnosticReport + Observations),
    /// ORM_O01 / OML_O21 (ServiceRequest and its Task).
    ToHl7 {
        file: PathBuf,
        #[arg(long)]
        message: String,
        /// MSH-5 and MSH-6 of the clinic it is for.
        #[arg(long, default_value = "EHR")]
        to_application: String,
        #[arg(long, default_value = "CLINIC")]
        to_facility: String,
    },
}

#[cfg(feature = "fhir")]
#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print an HS256 bearer token signed with [fhir.auth] hs256_secret.
    Issue {
        /// Who the token is for (audited as the actor).
        #[arg(long)]
        sub: String,
        /// clinician, admin, lab_technician or system: the role's SMART scopes.
        #[arg(long, conflicts_with = "scope")]
        role: Option<String>,
        /// SMART scopes, space separated, instead of a role's.
        #[arg(long)]
        scope: Option<String>,
        /// Patient launch context (limits patient/ scopes to this patient).
        #[arg(long)]
        patient: Option<uuid::Uuid>,
        /// Lifetime in minutes (default and most: [fhir.auth] max_token_minutes).
        #[arg(long)]
        minutes: Option<i64>,
    },
}

#[cfg(feature = "hl7")]
#[derive(Debug, Subcommand)]
enum PatientCommand {
    /// List patients split in two by concurrent first messages (before the
    /// fix of 2026-12): a patient without identifiers, and the one its
    /// message names. With --apply, merge each into that one as A40 does.
    RepairSplits {
        #[arg(long)]
        apply: bool,
        /// Who repairs, for the audit trail (default: $USER).
        #[arg(long)]
        actor: Option<String>,
    },
}

#[cfg(feature = "lab")]
#[derive(Debug, Subcommand)]
enum LabCommand {
    /// A stand-in lab: read new orders from the lab orders topic and report
    /// accepted, in_production, qc_failed, in_production, qc_passed,
    /// ready_to_ship, shipped, delivered for each on the status topic.
    Simulate {
        /// Consumer group of the stand-in lab.
        #[arg(long, default_value = "carehub-lab-simulator")]
        group: String,
        /// Stop after this many orders.
        #[arg(long)]
        orders: Option<usize>,
        /// Milliseconds between two reports.
        #[arg(long, default_value_t = 300)]
        step_ms: u64,
    },
    /// An order's journey: what arrived, what went to the lab, each lab
    /// status, each message to the clinic (audited as a read).
    Timeline {
        /// carehub's order id or the clinic's order number (ORC-2).
        order: String,
        /// Seconds to wait for the order to finish its journey and every
        /// message to the clinic to be accepted (0: print what is there now).
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Who looks, for the audit trail (default: $USER).
        #[arg(long)]
        actor: Option<String>,
    },
}

/// Exit codes: 0 success, 1 the command ran and found a failure, 2 bad
/// configuration or usage.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("carehub: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&cfg);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carehub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, cfg)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("carehub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, cfg: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => serve::run(cfg).await.map(|()| ExitCode::SUCCESS),
        Command::Migrate => commands::migrate(&cfg).await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => commands::audit_verify(&cfg).await,
        Command::Dlq {
            command: DlqCommand::List { status, limit, actor },
        } => commands::dlq_list(&cfg, status.as_deref(), limit, &actor_or_user(actor)).await,
        Command::Dlq {
            command: DlqCommand::Replay { id, actor },
        } => commands::dlq_replay(&cfg, id, &actor_or_user(actor)).await,
        Command::Config {
            command: ConfigCommand::Check,
        } => commands::config_check(&cfg),
        Command::Intake {
            command: IntakeCommand::Send { event_type, file },
        } => commands::publish_event(&cfg, &cfg.pipelines.intake.topic, &event_type, &file).await,
        #[cfg(feature = "hl7")]
        Command::Hl7 {
            command:
                Hl7Command::Send {
                    file,
                    to,
                    ack_timeout_ms,
                    max_attempts,
                },
        } => hl7::send(&file, &to, ack_timeout_ms, max_attempts).await,
        #[cfg(feature = "hl7")]
        Command::Hl7 {
            command: Hl7Command::Parse { file },
        } => hl7::parse(&file),
        #[cfg(all(feature = "hl7", feature = "fhir"))]
        Command::Hl7 {
            command: Hl7Command::ToFhir { file },
        } => convert::to_fhir(&file),
        #[cfg(all(feature = "hl7", feature = "fhir"))]
        Command::Hl7 {
            command: Hl7Command::ScoreConversion { dir, explain },
        } => convert::score_conversion(&dir, explain.as_deref()),
        #[cfg(feature = "hl7")]
        Command::Hl7 {
            command: Hl7Command::Receive { listen, count },
        } => hl7::receive(&listen, count).await,
        #[cfg(feature = "hl7")]
        Command::Patient {
            command: PatientCommand::RepairSplits { apply, actor },
        } => hl7::repair_splits(&cfg, apply, &actor_or_user(actor)).await,
        #[cfg(feature = "lab")]
        Command::Lab {
            command: LabCommand::Simulate { group, orders, step_ms },
        } => lab::simulate(&cfg, &group, orders, step_ms).await,
        #[cfg(feature = "lab")]
        Command::Lab {
            command: LabCommand::Timeline { order, wait, actor },
        } => lab::timeline(&cfg, &order, wait, &actor_or_user(actor)).await,
        #[cfg(feature = "fhir")]
        Command::Fhir {
            command: FhirCommand::LoadSynthetic { patients, actor },
        } => fhir::load_synthetic(&cfg, patients, &actor_or_user(actor)).await,
        #[cfg(feature = "fhir")]
        Command::Fhir {
            command: FhirCommand::Validate { path },
        } => fhir::validate(&path),
        #[cfg(all(feature = "hl7", feature = "fhir"))]
        Command::Fhir {
            command:
                FhirCommand::ToHl7 {
                    file,
                    message,
                    to_application,
                    to_facility,
                },
        } => convert::to_hl7(&file, &message, &to_application, &to_facility),
        #[cfg(feature = "fhir")]
        Command::Token {
            command:
                TokenCommand::Issue {
                    sub,
                    role,
                    scope,
                    patient,
                    minutes,
                },
        } => fhir::token_issue(&cfg, &sub, role.as_deref(), scope.as_deref(), patient, minutes),
        Command::Retention { keep_months, actor } => {
            commands::retention(&cfg, keep_months, &actor_or_user(actor)).await
        }
        Command::Trace { event_id, wait, actor } => commands::trace(&cfg, &event_id, wait, &actor_or_user(actor)).await,
    }
}

/// The operator named on the command line, else the login name.
fn actor_or_user(actor: Option<String>) -> String {
    actor
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "operator".into())
}

fn init_tracing(cfg: &Config) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let noise = tracing_subscriber::filter::DynFilterFn::new(|meta, _| library_line_allowed(meta))
        .with_callsite_filter(|_| tracing::subscriber::Interest::sometimes());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    match cfg.log.format {
        LogFormat::Json => registry.with(fmt.json().with_filter(filter).with_filter(noise)).init(),
        LogFormat::Text => registry.with(fmt.with_filter(filter).with_filter(noise)).init(),
    }
}

/// librdkafka repeats each connection failure several times a second while
/// the broker is away (hundreds of lines a minute): at most one of its lines
/// per ten seconds reaches the log. carehub's own line says what is wrong
/// and what it does about it (hardening item 14).
fn library_line_allowed(meta: &tracing::Metadata<'_>) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let target = meta.target();
    if !(target == "librdkafka" || target.starts_with("rdkafka")) || *meta.level() > tracing::Level::WARN {
        return true;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    now >= last + 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
