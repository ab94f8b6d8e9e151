//! The HL7 pipeline's check before the MLLP listener acknowledges: the
//! canonical mapping without the database ([`validate`](crate::validate)),
//! so content errors are answered at once (AE/AR with an ERR segment).

use carehub_hl7::Verdict;
use carehub_hl7::codec::{Message, Outcome};
use carehub_hl7::ingress::{Hl7Judge, Judged};

use crate::app_ack::{self, AckRoutes};
use crate::{MappingError, identity_error, validate};

/// Judges messages as the pipeline will apply them.
#[derive(Debug, Clone, Default)]
pub struct MappingJudge {
    /// Senders that get application ACKs (enhanced mode): their content
    /// errors are committed (CA) and answered AE by the pipeline.
    ack_routes: AckRoutes,
}

impl MappingJudge {
    /// See [`app_ack`].
    pub fn with_application_acks(routes: AckRoutes) -> Self {
        MappingJudge { ack_routes: routes }
    }

    /// In enhanced mode, with an application ACK wanted and a destination for
    /// it, a content error is the application's to report: the commit ACK is
    /// CA (stored) and the pipeline answers AE. Otherwise the error is
    /// answered at once (AE, or CE in enhanced mode).
    fn answered_later(&self, msg: &Message<'_>, e: &MappingError) -> bool {
        !e.reject && app_ack::routed(msg, Outcome::Error, &self.ack_routes)
    }
}

impl Hl7Judge for MappingJudge {
    fn judge(&self, msg: &Message<'_>) -> Judged {
        // A message without a usable MSH-10 has no identity.
        if let Some(e) = identity_error(msg) {
            return Judged {
                verdict: Verdict::Rejected(e.ack_error()),
                identified: false,
            };
        }
        let verdict = match validate(msg) {
            Ok(()) => Verdict::Accepted,
            Err(e) if self.answered_later(msg, &e) => Verdict::Accepted,
            Err(e) if e.reject => Verdict::Rejected(e.ack_error()),
            Err(e) => Verdict::Error(e.ack_error()),
        };
        Judged {
            verdict,
            identified: true,
        }
    }
}
