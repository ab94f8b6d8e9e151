//! OAuth2 bearer tokens (JWT) with SMART on FHIR scopes.
//!
//! A token's `scope` claim holds space-separated SMART v1 scopes:
//! `<context>/<resource type or *>.<read|write|*>`, context `patient`,
//! `user` or `system`. `patient/` scopes reach only the compartment of the
//! patient named by the token's `patient` claim. Tokens are signed with HS256
//! (a shared secret) or RS256/ES256 (configured public keys); `exp` is
//! required and a token may live no longer than `max_token_minutes`.

use std::path::PathBuf;

use carehub_core::SensitiveString;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `[fhir.auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 shared secret (at least 32 bytes). Secret: never logged.
    #[serde(default)]
    pub hs256_secret: Option<SensitiveString>,
    /// PEM public keys of issuers that sign with RS256.
    #[serde(default)]
    pub rs256_public_keys: Vec<PathBuf>,
    /// PEM public keys of issuers that sign with ES256 (P-256).
    #[serde(default)]
    pub es256_public_keys: Vec<PathBuf>,
    /// Expected `iss`; empty: not checked.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// Expected `aud` (the FHIR base URL, say); empty: not checked.
    #[serde(default)]
    pub audience: String,
    /// Longest lifetime (`exp` − `iat`) accepted, and what `carehub token issue` gives.
    #[serde(default = "default_max_token_minutes")]
    pub max_token_minutes: i64,
}

fn default_issuer() -> String {
    "carehub".to_owned()
}
const fn default_max_token_minutes() -> i64 {
    15
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            hs256_secret: None,
            rs256_public_keys: Vec::new(),
            es256_public_keys: Vec::new(),
            issuer: default_issuer(),
            audience: String::new(),
            max_token_minutes: default_max_token_minutes(),
        }
    }
}

/// The claims carehub reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who: a user, or a client for `system/` tokens. Audited as the actor.
    pub sub: String,
    pub iss: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// Space-separated SMART scopes.
    pub scope: String,
    /// SMART launch context: the patient `patient/` scopes are limited to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<Uuid>,
    /// The OAuth client, for rate limiting; `sub` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Context {
    Patient,
    User,
    System,
}

/// One SMART scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub context: Context,
    /// A resource type, or `*`.
    pub resource: String,
    pub read: bool,
    pub write: bool,
}

impl Scope {
    /// Parses `patient/*.read`, `user/ServiceRequest.write`, `system/*.*`;
    /// other scopes (`openid`, `launch`, …) are `None`.
    pub fn parse(s: &str) -> Option<Scope> {
        let (context, rest) = s.split_once('/')?;
        let context = match context {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            _ => return None,
        };
        let (resource, access) = rest.rsplit_once('.')?;
        let (read, write) = match access {
            "read" => (true, false),
            "write" => (false, true),
            "*" => (true, true),
            _ => return None,
        };
        let valid = resource == "*" || (!resource.is_empty() && resource.chars().all(|c| c.is_ascii_alphanumeric()));
        valid.then(|| Scope {
            context,
            resource: resource.to_owned(),
            read,
            write,
        })
    }

    fn covers(&self, resource_type: &str, access: Access) -> bool {
        (self.resource == "*" || self.resource == resource_type)
            && match access {
                Access::Read => self.read,
                Access::Write => self.write,
            }
    }
}

/// What a token lets its holder do with one resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Any resource of the type (`user/` or `system/` scope).
    All,
    /// Only resources in this patient's compartment (`patient/` scope).
    Patient(Uuid),
    None,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub claims: Claims,
    pub scopes: Vec<Scope>,
}

impl Principal {
    pub fn grant(&self, resource_type: &str, access: Access) -> Grant {
        let mut patient = false;
        for s in self.scopes.iter().filter(|s| s.covers(resource_type, access)) {
            match s.context {
                Context::User | Context::System => return Grant::All,
                Context::Patient => patient = true,
            }
        }
        match (patient, self.claims.patient) {
            (true, Some(p)) => Grant::Patient(p),
            _ => Grant::None,
        }
    }

    /// The audit actor: the token's subject.
    pub fn actor(&self) -> &str {
        &self.claims.sub
    }

    /// The rate-limit key.
    /// How the audit trail names this principal: a system (a `system/` scope) or a user.
    pub fn actor_kind(&self) -> carehub_schema::ActorKind {
        if self.scopes.iter().any(|s| s.context == crate::auth::Context::System) {
            carehub_schema::ActorKind::System
        } else {
            carehub_schema::ActorKind::User
        }
    }

    pub fn client(&self) -> &str {
        self.claims.client_id.as_deref().unwrap_or(&self.claims.sub)
    }
}

/// Roles operators give people and systems, as SMART scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads the record, orders devices, updates patients.
    Clinician,
    /// Everything, as a user.
    Admin,
    /// Follows and updates the lab's work.
    LabTechnician,
    /// A system client (an EHR's backend, an integration).
    System,
}

impl Role {
    pub fn scopes(self) -> &'static str {
        match self {
            Role::Clinician => "user/*.read user/ServiceRequest.write user/Patient.write",
            Role::Admin => "user/*.*",
            Role::LabTechnician => {
                "user/Task.* user/ServiceRequest.read user/Observation.* user/DiagnosticReport.* user/Patient.read"
            }
            Role::System => "system/*.*",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "clinician" => Some(Role::Clinician),
            "admin" => Some(Role::Admin),
            "lab_technician" => Some(Role::LabTechnician),
            "system" => Some(Role::System),
            _ => None,
        }
    }
}

/// Why a token was not accepted (answered 401).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token lives {0} minutes; at most {1} are accepted")]
    TooLong(i64, i64),
    #[error("no signing key configured ([fhir.auth])")]
    NoKey,
    #[error("cannot read key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("fhir.auth.hs256_secret has {0} bytes; at least {MIN_HS256_SECRET_BYTES} are required (RFC 7518 §3.2)")]
    WeakSecret(usize),
    #[error("token lifetime of {0} minutes is outside 1..={1} (fhir.auth.max_token_minutes)")]
    BadLifetime(i64, i64),
}

/// An HS256 key must be at least as long as the hash (RFC 7518 §3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: i64 = 5;

/// Verifies bearer tokens against the configured keys.
#[derive(Clone)]
pub struct Authenticator {
    keys: Vec<(Algorithm, DecodingKey)>,
    config: AuthConfig,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("keys", &self.keys.len()).finish()
    }
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.hs256_secret {
            let len = secret.expose().len();
            if len < MIN_HS256_SECRET_BYTES {
                return Err(AuthError::WeakSecret(len));
            }
            keys.push((Algorithm::HS256, DecodingKey::from_secret(secret.expose().as_bytes())));
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| AuthError::Key {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        };
        for path in &config.rs256_public_keys {
            let key = DecodingKey::from_rsa_pem(&read(path)?).map_err(|e| AuthError::Key {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            keys.push((Algorithm::RS256, key));
        }
        for path in &config.es256_public_keys {
            let key = DecodingKey::from_ec_pem(&read(path)?).map_err(|e| AuthError::Key {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            keys.push((Algorithm::ES256, key));
        }
        Ok(Authenticator {
            keys,
            config: config.clone(),
        })
    }

    /// Verifies `token` (signature, `exp`, `iss`, `aud`, lifetime) and reads its scopes.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if self.keys.is_empty() {
            return Err(AuthError::NoKey);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let mut last = AuthError::Invalid(format!("no key for algorithm {:?}", header.alg));
        for (alg, key) in self.keys.iter().filter(|(alg, _)| *alg == header.alg) {
            let mut v = Validation::new(*alg);
            v.leeway = LEEWAY_SECS as u64;
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp", "iat", "sub"]);
            if !self.config.issuer.is_empty() {
                v.set_issuer(&[&self.config.issuer]);
            }
            if self.config.audience.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&[&self.config.audience]);
            }
            match jsonwebtoken::decode::<Claims>(token, key, &v) {
                Ok(data) => {
                    let c = data.claims;
                    // The lifetime left is measured from now, not from the
                    // token's own `iat`: a token cannot claim to be issued
                    // in the future to stretch it (hardening item 10).
                    let now = chrono::Utc::now().timestamp();
                    if c.iat > now + LEEWAY_SECS {
                        return Err(AuthError::Invalid("iat is in the future".into()));
                    }
                    if c.iat > c.exp {
                        return Err(AuthError::Invalid("iat is after exp".into()));
                    }
                    let left = c.exp - now;
                    if left > self.config.max_token_minutes * 60 + LEEWAY_SECS {
                        return Err(AuthError::TooLong(left / 60, self.config.max_token_minutes));
                    }
                    let scopes = c.scope.split_whitespace().filter_map(Scope::parse).collect();
                    return Ok(Principal { claims: c, scopes });
                }
                Err(e) => last = AuthError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }
}

/// Issues an HS256 token (`carehub token issue`): for operators and tests.
pub fn issue(
    config: &AuthConfig,
    sub: &str,
    scope: &str,
    patient: Option<Uuid>,
    minutes: Option<i64>,
) -> Result<String, AuthError> {
    let secret = config.hs256_secret.as_ref().ok_or(AuthError::NoKey)?;
    if secret.expose().len() < MIN_HS256_SECRET_BYTES {
        return Err(AuthError::WeakSecret(secret.expose().len()));
    }
    let now = chrono::Utc::now().timestamp();
    let minutes = minutes.unwrap_or(config.max_token_minutes);
    // The server refuses what lives longer: refuse to issue it (item 10).
    // Negative minutes stay possible: tests issue expired tokens that way.
    if minutes > config.max_token_minutes || minutes == 0 {
        return Err(AuthError::BadLifetime(minutes, config.max_token_minutes));
    }
    let claims = Claims {
        sub: sub.to_owned(),
        iss: config.issuer.clone(),
        aud: config.audience.clone(),
        iat: now,
        exp: now + minutes * 60,
        scope: scope.to_owned(),
        patient,
        client_id: None,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            hs256_secret: Some("a test secret that is long enough!!".into()),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn scopes_parse_and_grant() {
        assert_eq!(
            Scope::parse("patient/*.read"),
            Some(Scope {
                context: Context::Patient,
                resource: "*".into(),
                read: true,
                write: false
            })
        );
        assert!(Scope::parse("openid").is_none());
        assert!(Scope::parse("user/Patient.delete").is_none());
        assert!(Scope::parse("user/Pat ient.read").is_none());
        let token = issue(&config(), "dr-1", Role::Clinician.scopes(), None, None).expect("issue");
        let p = Authenticator::new(&config())
            .expect("keys")
            .verify(&token)
            .expect("valid");
        assert_eq!(p.grant("Patient", Access::Read), Grant::All);
        assert_eq!(p.grant("ServiceRequest", Access::Write), Grant::All);
        assert_eq!(p.grant("Task", Access::Write), Grant::None);
        let pid = Uuid::now_v7();
        let token = issue(&config(), "pat-1", "patient/*.read", Some(pid), None).expect("issue");
        let p = Authenticator::new(&config())
            .expect("keys")
            .verify(&token)
            .expect("valid");
        assert_eq!(p.grant("Observation", Access::Read), Grant::Patient(pid));
        assert_eq!(p.grant("Observation", Access::Write), Grant::None);
    }

    #[test]
    fn expired_long_lived_foreign_and_tampered_tokens_are_refused() {
        let auth = Authenticator::new(&config()).expect("keys");
        let expired = issue(&config(), "x", "system/*.*", None, Some(-5)).expect("issue");
        assert!(matches!(auth.verify(&expired), Err(AuthError::Invalid(_))));
        let now = chrono::Utc::now().timestamp();
        let long = sign(
            serde_json::json!({ "sub": "x", "iss": config().issuer, "iat": now, "exp": now + 3600, "scope": "system/*.*" }),
        );
        assert!(matches!(auth.verify(&long), Err(AuthError::TooLong(60, 15))));
        let other = AuthConfig {
            hs256_secret: Some("another secret, also long enough!!!".into()),
            ..AuthConfig::default()
        };
        let foreign = issue(&other, "x", "system/*.*", None, None).expect("issue");
        assert!(auth.verify(&foreign).is_err());
        let good = issue(&config(), "x", "system/*.*", None, None).expect("issue");
        let mut tampered = good.clone();
        tampered.pop();
        tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
        assert!(auth.verify(&tampered).is_err());
        assert!(matches!(
            Authenticator::new(&AuthConfig::default())
                .expect("no keys")
                .verify(&good),
            Err(AuthError::NoKey)
        ));
    }

    fn sign(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"a test secret that is long enough!!"),
        )
        .expect("sign")
    }

    /// Hardening item 10 (on 305005c each of these tokens was accepted, 200).
    #[test]
    fn the_lifetime_counts_from_now_and_iat_and_nbf_are_checked() {
        let auth = Authenticator::new(&config()).expect("keys");
        let now = chrono::Utc::now().timestamp();
        let year = 365 * 24 * 3600;
        let claims = |iat: i64, exp: i64, nbf: Option<i64>| {
            let mut c = serde_json::json!({ "sub": "x", "iss": config().issuer, "iat": iat, "exp": exp, "scope": "system/*.*" });
            if let Some(nbf) = nbf {
                c["nbf"] = nbf.into();
            }
            sign(c)
        };
        let ahead = claims(now + year, now + year + 600, None);
        assert!(
            auth.verify(&ahead).is_err(),
            "iat a year ahead, exp ten minutes after it"
        );
        let inverted = claims(now, now - 60 + 600, None);
        let control = auth.verify(&inverted);
        assert!(control.is_ok(), "a plain ten-minute token (control): {control:?}");
        let backwards = claims(now + 60, now + 30, None);
        assert!(auth.verify(&backwards).is_err(), "iat after exp");
        let not_yet = claims(now, now + 600, Some(now + 3600));
        assert!(auth.verify(&not_yet).is_err(), "nbf in an hour");
        let stretched = claims(now - 3000, now + 3000, None);
        assert!(
            matches!(auth.verify(&stretched), Err(AuthError::TooLong(..))),
            "exp − iat within bounds is not enough: fifty minutes are left"
        );
    }

    /// Hardening items 10 and 11 (on 305005c both were issued / accepted).
    #[test]
    fn tokens_the_server_would_refuse_are_not_issued_and_short_secrets_are_refused() {
        assert!(matches!(
            issue(&config(), "x", "system/*.*", None, Some(525_600)),
            Err(AuthError::BadLifetime(525_600, 15))
        ));
        let weak = AuthConfig {
            hs256_secret: Some("12345".into()),
            ..AuthConfig::default()
        };
        assert!(matches!(Authenticator::new(&weak), Err(AuthError::WeakSecret(5))));
        assert!(matches!(
            issue(&weak, "x", "system/*.*", None, None),
            Err(AuthError::WeakSecret(5))
        ));
    }
}
