//! The FHIR domain's outcome of an interaction: success or an
//! OperationOutcome, with the status FHIR's RESTful API assigns it
//! (`Bundle.entry.response.status` carries it too). No HTTP types here:
//! the HTTP layer (`http`) turns a [`Status`] into its status code.

use serde_json::{Value, json};

/// An interaction's status as FHIR's RESTful API names it (an HTTP status number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Status(u16);

impl Status {
    pub const OK: Status = Status(200);
    pub const CREATED: Status = Status(201);
    pub const NO_CONTENT: Status = Status(204);
    pub const BAD_REQUEST: Status = Status(400);
    pub const UNAUTHORIZED: Status = Status(401);
    pub const FORBIDDEN: Status = Status(403);
    pub const NOT_FOUND: Status = Status(404);
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    pub const NOT_ACCEPTABLE: Status = Status(406);
    pub const REQUEST_TIMEOUT: Status = Status(408);
    pub const CONFLICT: Status = Status(409);
    pub const GONE: Status = Status(410);
    pub const PRECONDITION_FAILED: Status = Status(412);
    pub const PAYLOAD_TOO_LARGE: Status = Status(413);
    pub const URI_TOO_LONG: Status = Status(414);
    pub const UNSUPPORTED_MEDIA_TYPE: Status = Status(415);
    pub const UNPROCESSABLE_ENTITY: Status = Status(422);
    pub const TOO_MANY_REQUESTS: Status = Status(429);
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: Status = Status(431);
    pub const INTERNAL_SERVER_ERROR: Status = Status(500);
    pub const SERVICE_UNAVAILABLE: Status = Status(503);

    pub fn from_u16(code: u16) -> Self {
        Status(code)
    }

    pub fn as_u16(self) -> u16 {
        self.0
    }

    /// `201 Created`, as a Bundle entry's response says it.
    pub fn line(self) -> String {
        format!("{} {}", self.0, self.reason())
    }

    fn reason(self) -> &'static str {
        match self.0 {
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            408 => "Request Timeout",
            409 => "Conflict",
            410 => "Gone",
            412 => "Precondition Failed",
            413 => "Payload Too Large",
            414 => "URI Too Long",
            415 => "Unsupported Media Type",
            422 => "Unprocessable Entity",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line())
    }
}

/// An error as FHIR answers it: an OperationOutcome with the status FHIR's
/// RESTful API gives it.
#[derive(Debug)]
pub struct Outcome {
    status: Status,
    /// FHIR issue-type code (`not-found`, `login`, `forbidden`, …).
    code: &'static str,
    diagnostics: String,
    /// Validation issues, each with where it is (FHIRPath-like).
    located: Vec<crate::validate::Issue>,
}

impl Outcome {
    pub fn new(status: impl Into<Status>, code: &'static str, diagnostics: impl Into<String>) -> Self {
        Outcome {
            status: status.into(),
            code,
            diagnostics: diagnostics.into(),
            located: Vec::new(),
        }
    }

    /// One issue per validation problem.
    pub fn issues(status: impl Into<Status>, code: &'static str, issues: &[crate::validate::Issue]) -> Self {
        Outcome {
            status: status.into(),
            code,
            diagnostics: format!("{} problem(s) with the resource", issues.len()),
            located: issues.to_vec(),
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// The same error, said of one entry of a Bundle.
    pub fn in_entry(mut self, index: usize) -> Self {
        self.diagnostics = format!("Bundle.entry[{index}]: {}", self.diagnostics);
        for i in &mut self.located {
            i.path = format!("Bundle.entry[{index}].resource.{}", i.path);
        }
        self
    }

    pub fn body(&self) -> Value {
        let issues: Vec<Value> = if self.located.is_empty() {
            vec![json!({ "severity": "error", "code": self.code, "diagnostics": self.diagnostics })]
        } else {
            self.located
                .iter()
                .map(|i| json!({ "severity": "error", "code": self.code, "diagnostics": i.message, "expression": [i.path] }))
                .collect()
        };
        json!({ "resourceType": "OperationOutcome", "issue": issues })
    }
}

impl From<sqlx::Error> for Outcome {
    fn from(e: sqlx::Error) -> Self {
        carehub_schema::Error::from(e).into()
    }
}

impl From<carehub_schema::Error> for Outcome {
    fn from(e: carehub_schema::Error) -> Self {
        match e.code() {
            // Class 22, data exception: the request carried a value the
            // store cannot take. The client's error, not an outage: 400,
            // and no ERROR line (the value is never quoted).
            Some(code) if code.starts_with("22") => {
                tracing::info!(sqlstate = code, "FHIR request refused: a value the store cannot take");
                Outcome::new(
                    Status::BAD_REQUEST,
                    "invalid",
                    format!("a value in the request cannot be stored or searched (SQLSTATE {code})"),
                )
            }
            _ if e.is_transient() => {
                tracing::error!(error = %e, "FHIR request failed on the database");
                Outcome::new(
                    Status::SERVICE_UNAVAILABLE,
                    "transient",
                    "the record is unavailable; try again",
                )
            }
            _ => {
                tracing::error!(
                    sqlstate = e.code().unwrap_or("none"),
                    "FHIR request failed on the database"
                );
                Outcome::new(
                    Status::INTERNAL_SERVER_ERROR,
                    "exception",
                    "the request could not be completed",
                )
            }
        }
    }
}
