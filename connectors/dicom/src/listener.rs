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
use crate::store::{Receiving, StoreService};

/// The association server, bound.
pub struct DimseListener {
    cfg: Arc<DicomConfig>,
    listener: TcpListener,
    store: Option<StoreService>,
}

impl std::fmt::Debug for DimseListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DimseListener")
            .field("listen", &self.cfg.listen)
            .finish()
    }
}

impl DimseListener {
    /// Binds `[dicom] listen`; `store` serves C-STORE (without it, storage is refused).
    pub async fn bind(cfg: DicomConfig, store: Option<StoreService>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(&cfg.listen).await?;
        Ok(DimseListener {
            cfg: Arc::new(cfg),
            listener,
            store,
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
                    let (cfg, store) = (self.cfg.clone(), self.store.clone());
                    tokio::spawn(async move {
                        serve_association(cfg, store, socket).await;
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

async fn serve_association(cfg: Arc<DicomConfig>, store: Option<StoreService>, socket: TcpStream) {
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
        // Every abstract syntax proposed is accepted (dicom-rs keeps its SOP
        // class list to itself): each command is then checked — C-STORE for
        // storage SOP classes only, C-ECHO for Verification.
        .promiscuous(true)
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
    let peer = peer_addr.to_string();
    let mut command: Vec<u8> = Vec::new();
    // The C-STORE whose data set is arriving, its request and presentation context.
    let mut receiving: Option<(Receiving, Command, u8)> = None;
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
                        let pc = pdv.presentation_context_id;
                        if pdv.value_type == PDataValueType::Data {
                            let (Some((r, _, context)), Some(store)) = (receiving.as_mut(), store.as_ref()) else {
                                return Err(Ended::Protocol("a data set where no command asked for one".into()));
                            };
                            if *context != pc {
                                return Err(Ended::Protocol("a data set on another presentation context".into()));
                            }
                            store.data(r, &pdv.data);
                            if pdv.is_last
                                && let Some((r, request, _)) = receiving.take()
                            {
                                let done = store.finish(r, &peer, &calling).await;
                                let rsp = dimse::response(
                                    field::C_STORE_RSP,
                                    &request,
                                    done.status,
                                    done.comment.as_deref(),
                                )?;
                                tracing::info!(calling_ae = %calling, status = format!("{:#06x}", done.status), "C-STORE answered");
                                send_command(&mut association, pc, rsp).await?;
                            }
                            continue;
                        }
                        if receiving.is_some() {
                            return Err(Ended::Protocol("a command while a data set is still arriving".into()));
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
                                let rsp = dimse::response(field::C_ECHO_RSP, &request, status::SUCCESS, None)?;
                                send_command(&mut association, pc, rsp).await?;
                            }
                            field::C_STORE_RQ if request.has_data_set && store.is_some() => {
                                let ts = association
                                    .presentation_contexts()
                                    .iter()
                                    .find(|c| c.id == pc)
                                    .map(|c| c.transfer_syntax.trim_end_matches('\0').to_owned())
                                    .unwrap_or_default();
                                let class = request.affected_sop_class.clone().unwrap_or_default();
                                let instance = request.affected_sop_instance.clone().unwrap_or_default();
                                let allowed = policy.allows(&calling, Service::Store);
                                let r = store
                                    .as_ref()
                                    .map(|s| s.begin(&class, &instance, &ts, allowed))
                                    .ok_or_else(|| Ended::Protocol("no storage".into()))?;
                                receiving = Some((r, request, pc));
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

async fn send_command<S>(
    association: &mut dicom_ul::association::AsyncServerAssociation<S>,
    presentation_context_id: u8,
    data: Vec<u8>,
) -> Result<(), Ended>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    association
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        })
        .await
        .map_err(|e| Ended::Protocol(e.to_string()))
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
