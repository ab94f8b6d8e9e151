//! [`DimseListener`]: the DIMSE association server. Each association is
//! checked against the peers at association time ([`PeerPolicy`]), then
//! serves its commands until the peer releases, aborts or falls silent for
//! `[dicom] idle_secs`.

use std::sync::Arc;
use std::time::Duration;

use carehub_core::internal_events::{ComponentError, Stage};
use dicom_ul::association::Association as _;
use dicom_ul::association::server::ServerAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::config::{DicomConfig, Service};
use crate::dimse::{self, Command, field, status};
use crate::policy::PeerPolicy;

/// The association server, bound.
pub struct DimseListener {
    cfg: Arc<DicomConfig>,
    listener: TcpListener,
}

impl std::fmt::Debug for DimseListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DimseListener")
            .field("listen", &self.cfg.listen)
            .finish()
    }
}

impl DimseListener {
    pub async fn bind(cfg: DicomConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(&cfg.listen).await?;
        Ok(DimseListener {
            cfg: Arc::new(cfg),
            listener,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts associations until `shutdown`; at most `max_associations` at once.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.cfg.max_associations.max(1)));
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = shutdown.changed() => return,
            };
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = shutdown.changed() => return,
            };
            match accepted {
                Ok((socket, _)) => {
                    let cfg = self.cfg.clone();
                    tokio::spawn(async move {
                        serve_association(cfg, socket).await;
                        drop(permit);
                    });
                }
                Err(e) => ComponentError {
                    component: "dicom_listener",
                    stage: Stage::Receiving,
                    error_code: "accept_failed",
                    error: &e,
                }
                .emit(),
            }
        }
    }
}

/// Why an association ended other than by a release.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("silent for {0:?}")]
    Idle(Duration),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Command(#[from] dimse::Error),
}

async fn serve_association(cfg: Arc<DicomConfig>, socket: TcpStream) {
    let Ok(peer_addr) = socket.peer_addr() else { return };
    let idle = Duration::from_secs(cfg.idle_secs.max(1));
    let policy = PeerPolicy {
        peers: cfg.peers.values().cloned().collect(),
        source: peer_addr.ip(),
    };
    let options = ServerAssociationOptions::new()
        .ae_access_control(policy.clone())
        .ae_title(cfg.ae_title.as_str())
        .with_abstract_syntax(dimse::VERIFICATION)
        .max_pdu_length(cfg.max_pdu_length)
        .read_timeout(idle)
        .write_timeout(idle);
    let mut association = match tokio::time::timeout(idle, options.establish_async(socket)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            // Rejected (the reason went to the peer in the A-ASSOCIATE-RJ) or not DICOM.
            tracing::info!(source = %peer_addr.ip(), error = %e, "DICOM association refused");
            return;
        }
        Err(_) => {
            tracing::info!(source = %peer_addr.ip(), "DICOM association not negotiated in time");
            return;
        }
    };
    let calling = association.peer_ae_title().trim().to_owned();
    tracing::info!(calling_ae = %calling, source = %peer_addr.ip(), "DICOM association accepted");
    let mut command: Vec<u8> = Vec::new();
    let outcome: Result<(), Ended> = async {
        loop {
            let pdu = match tokio::time::timeout(idle, association.receive()).await {
                Err(_) => return Err(Ended::Idle(idle)),
                Ok(Err(e)) => return Err(Ended::Protocol(e.to_string())),
                Ok(Ok(pdu)) => pdu,
            };
            match pdu {
                Pdu::PData { data } => {
                    for pdv in data {
                        if pdv.value_type != PDataValueType::Command {
                            return Err(Ended::Protocol("a data set where no command asked for one".into()));
                        }
                        // Command fragments are reassembled up to the last one.
                        if command.len() + pdv.data.len() > 64 * 1024 {
                            return Err(Ended::Protocol("a command set over 64 KiB".into()));
                        }
                        command.extend_from_slice(&pdv.data);
                        if !pdv.is_last {
                            continue;
                        }
                        let request = Command::parse(&command)?;
                        command.clear();
                        match request.field {
                            field::C_ECHO_RQ if policy.allows(&calling, Service::Echo) => {
                                let rsp = dimse::response(field::C_ECHO_RSP, &request, status::SUCCESS)?;
                                association
                                    .send(&Pdu::PData {
                                        data: vec![PDataValue {
                                            presentation_context_id: pdv.presentation_context_id,
                                            value_type: PDataValueType::Command,
                                            is_last: true,
                                            data: rsp,
                                        }],
                                    })
                                    .await
                                    .map_err(|e| Ended::Protocol(e.to_string()))?;
                            }
                            other => {
                                return Err(Ended::Protocol(format!(
                                    "command field {other:#06x} is not offered to this peer"
                                )));
                            }
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    let _ = association.send(&Pdu::ReleaseRP).await;
                    return Ok(());
                }
                Pdu::AbortRQ { .. } => return Ok(()),
                other => return Err(Ended::Protocol(format!("unexpected {}", pdu_name(&other)))),
            }
        }
    }
    .await;
    match outcome {
        Ok(()) => tracing::info!(calling_ae = %calling, "DICOM association ended"),
        Err(e) => {
            ComponentError {
                component: "dicom_listener",
                stage: Stage::Receiving,
                error_code: match e {
                    Ended::Idle(_) => "idle_timeout",
                    Ended::Protocol(_) => "protocol_error",
                    Ended::Command(_) => "bad_command",
                },
                error: &e,
            }
            .emit();
            // A-ABORT (PS3.8 7.3): the peer learns the association is gone.
            let _ = association.abort().await;
        }
    }
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
        _ => "PDU",
    }
}
