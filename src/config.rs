//! The one configuration file, with `CAREHUB_<SECTION>__<KEY>` environment overrides.
//!
//! Every option is documented on its field; `config/carehub.toml` is the
//! annotated example and `carehub config check` prints the effective values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use carehub_kafka::{KafkaConfig, RelayConfig};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub database: carehub_schema::db::DatabaseConfig,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub outbox: RelayConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[cfg(feature = "hl7")]
    #[serde(default)]
    pub hl7: carehub_hl7::Hl7Config,
    #[serde(default)]
    pub pipelines: PipelinesConfig,
    #[cfg(feature = "fhir")]
    #[serde(default)]
    pub fhir: carehub_fhir::FhirConfig,
    #[cfg(feature = "dicom")]
    #[serde(default)]
    pub dicom: carehub_dicom::DicomConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
}

/// How `carehub serve` stops on SIGTERM or Ctrl-C.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Seconds the running work has to finish (connections answer the
    /// message in hand, pipelines commit their batch) before the process
    /// exits anyway, whatever is unreachable.
    #[serde(default = "default_grace_secs")]
    pub grace_secs: u64,
}

const fn default_grace_secs() -> u64 {
    10
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_secs: default_grace_secs(),
        }
    }
}

/// The operations HTTP server: `/healthz`, `/readyz`, `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Logging. Logs carry ids, never names, birth dates or MRNs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json` (one JSON object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter (`info`, `carehub=debug,sqlx=warn`); `RUST_LOG` wins when set.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".to_owned()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: default_level(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelinesConfig {
    /// How every pipeline retries a failing batch, and when it counts as stalled.
    #[serde(default)]
    pub retry: carehub_kafka::RetryConfig,
    #[serde(default)]
    pub intake: carehub_pipeline_intake::IntakeConfig,
    #[cfg(feature = "hl7")]
    #[serde(default)]
    pub hl7: carehub_pipeline_hl7::Hl7PipelineConfig,
    #[cfg(feature = "lab")]
    #[serde(default)]
    pub lab: carehub_pipeline_lab::LabConfig,
}

/// A configuration that cannot be used; the message names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// Parsed, but not usable: `serve` would fail on it (hardening item 16).
    #[error("invalid configuration: {key}: {reason}")]
    Unusable { key: String, reason: String },
}

/// A Kafka topic or group name as brokers accept it: 1 to 249 characters of
/// `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Unusable {
            key: key.to_owned(),
            reason: format!("{name:?} is not a Kafka topic or group name (1-249 of a-z A-Z 0-9 . _ -)"),
        })
    }
}

impl Config {
    /// The effective configuration as TOML. Secrets serialize redacted
    /// (`SensitiveString`, secret Kafka properties), whichever section holds them.
    pub fn redacted_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }

    /// Reads `path` (when given) and applies `CAREHUB_<SECTION>__<KEY>` overrides,
    /// e.g. `CAREHUB_DATABASE__URL`, `CAREHUB_KAFKA__BROKERS`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only keys with a section separator are options; CAREHUB_CORPUS and the
        // like belong to tools, not to this file.
        figment = figment.merge(
            Env::prefixed("CAREHUB_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        let cfg: Config = figment.extract().map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// What parsing cannot tell: keys that must be readable, names the
    /// broker must accept, secrets long enough. `config check` and `serve`
    /// both refuse such a configuration with exit code 2.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let unusable = |key: &str, reason: String| ConfigError::Unusable {
            key: key.to_owned(),
            reason,
        };
        let p = &self.pipelines;
        #[cfg_attr(not(any(feature = "hl7", feature = "fhir")), allow(unused_mut))]
        let mut names = vec![
            ("pipelines.intake.topic", &p.intake.topic),
            ("pipelines.intake.group", &p.intake.group),
            ("pipelines.intake.events_topic", &p.intake.events_topic),
        ];
        #[cfg(feature = "hl7")]
        names.extend([
            ("pipelines.hl7.topic", &p.hl7.topic),
            ("pipelines.hl7.group", &p.hl7.group),
            ("pipelines.hl7.events_topic", &p.hl7.events_topic),
            ("pipelines.hl7.outbound_topic", &p.hl7.outbound_topic),
            ("pipelines.hl7.outbound_group", &p.hl7.outbound_group),
        ]);
        #[cfg(feature = "lab")]
        names.extend([
            ("pipelines.lab.events_topic", &p.lab.events_topic),
            ("pipelines.lab.dispatch_group", &p.lab.dispatch_group),
            ("pipelines.lab.orders_topic", &p.lab.orders_topic),
            ("pipelines.lab.status_topic", &p.lab.status_topic),
            ("pipelines.lab.status_group", &p.lab.status_group),
            ("pipelines.lab.results_topic", &p.lab.results_topic),
            ("pipelines.lab.results_group", &p.lab.results_group),
            ("pipelines.lab.ehr_events_topic", &p.lab.ehr_events_topic),
        ]);
        #[cfg(feature = "fhir")]
        names.push(("fhir.push_group", &self.fhir.push_group));
        for (key, name) in names {
            check_name(key, name)?;
        }
        #[cfg(feature = "fhir")]
        {
            if self.fhir.enabled || self.fhir.auth.hs256_secret.is_some() {
                carehub_fhir::Authenticator::new(&self.fhir.auth).map_err(|e| unusable("fhir.auth", e.to_string()))?;
            }
            if self.fhir.auth.max_token_minutes < 1 {
                return Err(unusable("fhir.auth.max_token_minutes", "must be at least 1".into()));
            }
        }
        #[cfg(feature = "hl7")]
        if let Some(tls) = &self.hl7.listener.tls {
            tls.check().map_err(|e| unusable("hl7.listener.tls", e.to_string()))?;
        }
        if self.pipelines.retry.max_attempts == 0 {
            return Err(unusable("pipelines.retry.max_attempts", "must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).expect("write config");
        p
    }

    #[test]
    fn example_config_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/carehub.toml");
        let cfg = Config::load(Some(&path)).expect("example config");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn printing_the_configuration_redacts_every_secret() {
        let dir = std::env::temp_dir().join(format!("carehub-cfg-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = write(
            &dir,
            "secrets.toml",
            "[database]\nurl = \"postgres://u:db-password-1@h/d\"\n\
             [fhir.auth]\nhs256_secret = \"jwt-secret-2-long-enough-for-hs256!!\"\n\
             [fhir.push.north]\nbase_url = \"http://ehr\"\nclinic = \"N\"\nbearer_token = \"push-token-3\"\n\
             [kafka.properties]\n\"sasl.password\" = \"kafka-password-4\"\n\"linger.ms\" = \"5\"\n",
        );
        let cfg = Config::load(Some(&p)).expect("config");
        let text = cfg.redacted_toml().expect("toml");
        for secret in ["db-password-1", "jwt-secret-2", "push-token-3", "kafka-password-4"] {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }
        assert_eq!(text.matches("**REDACTED**").count(), 4);
        assert!(text.contains("linger.ms"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let dir = std::env::temp_dir().join(format!("carehub-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = write(&dir, "bad-type.toml", "[database]\nmax_connections = \"many\"\n");
        let msg = Config::load(Some(&p)).expect_err("bad type").to_string();
        assert!(msg.contains("database.max_connections"), "{msg}");
        assert!(msg.contains("bad-type.toml"), "{msg}");

        let p = write(&dir, "unknown.toml", "[kafka]\nbrokerz = \"x\"\n");
        let msg = Config::load(Some(&p)).expect_err("unknown key").to_string();
        assert!(msg.contains("brokerz"), "{msg}");

        let p = write(&dir, "syntax.toml", "[http\nlisten = 1\n");
        let msg = Config::load(Some(&p)).expect_err("syntax").to_string();
        assert!(msg.contains("syntax.toml"), "{msg}");

        let msg = Config::load(Some(&dir.join("absent.toml")))
            .expect_err("missing")
            .to_string();
        assert!(msg.contains("absent.toml"), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
