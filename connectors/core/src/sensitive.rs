use std::fmt;

use serde::{Deserialize, Serialize};

/// What a secret prints and serializes as.
pub const REDACTED: &str = "**REDACTED**";

/// A secret (a password, an API key, a database URL with credentials) that
/// prints as `**REDACTED**` in logs, errors and `Debug` output, and
/// serializes as `**REDACTED**` too: a configuration printed or sent
/// anywhere never carries it, whichever struct holds it. It is read
/// (deserialized) as the secret itself.
#[derive(Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(transparent)]
pub struct SensitiveString(String);

impl Serialize for SensitiveString {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// Whether a free-form setting (a librdkafka property, say) holds a secret,
/// by its name: passwords, secrets, private keys, SASL credentials.
pub fn is_secret_setting(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "private",
        "key.pem",
        "sasl.jaas",
        "oauthbearer.config",
        "token",
    ]
    .iter()
    .any(|s| name.contains(s))
}

impl SensitiveString {
    pub fn new(s: impl Into<String>) -> Self {
        SensitiveString(s.into())
    }
    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SensitiveString {
    fn from(s: &str) -> Self {
        SensitiveString(s.to_owned())
    }
}

impl fmt::Debug for SensitiveString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SensitiveString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_secret() {
        let s: SensitiveString = serde_json::from_str("\"postgres://u:pw@h/db\"").expect("json");
        assert_eq!(format!("{s} {s:?}"), "**REDACTED** **REDACTED**");
        assert_eq!(s.expose(), "postgres://u:pw@h/db");
    }

    #[test]
    fn serializes_redacted_wherever_it_is_held() {
        #[derive(Serialize)]
        struct Holder {
            url: SensitiveString,
            token: Option<SensitiveString>,
        }
        let h = Holder {
            url: "postgres://u:pw@h/db".into(),
            token: Some("t0ken".into()),
        };
        let json = serde_json::to_string(&h).expect("json");
        assert_eq!(json, r#"{"url":"**REDACTED**","token":"**REDACTED**"}"#);
    }

    #[test]
    fn secret_settings_are_known_by_name() {
        for name in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
        ] {
            assert!(is_secret_setting(name), "{name}");
        }
        for name in ["security.protocol", "linger.ms", "sasl.mechanism", "ssl.ca.location"] {
            assert!(!is_secret_setting(name), "{name}");
        }
    }
}
