//! [`MllpListener`]: HL7 v2 over MLLP, inbound.
//!
//! One task per connection, one message at a time per connection: a frame is
//! read, parsed, handed to the [`InboundSink`] (which stores it durably and
//! judges its content), and only then is its ACK written. The next frame is
//! read after that, so an ACK can never be credited to another message, and
//! a message is never acknowledged before it is stored. When the sink cannot
//! store, the sender gets AR (CR) with error 207 and resends later: never AA.
//!
//! Unreadable frames are stored too (as failed, with the reason) and answered
//! with AR and an ERR segment. An oversized frame, bytes outside a frame or a
//! sender idle past the timeout close the connection with a logged reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use carehub_core::internal_events::{ComponentError, Hl7AckSent, Hl7Connections, MessageReceived, Stage};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::codec::Framed;

pub use crate::CONNECTOR;
use crate::codec::ack::{self, AckCode, AckError, AckMode, Outcome};
use crate::codec::batch;
use crate::codec::er7::{Message, ParseError};
use crate::codec::mllp::{FrameError, MllpCodec};

/// `[hl7.listener]`: where and how the MLLP listener accepts connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to accept MLLP connections on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest message accepted, in bytes; a larger frame closes the connection.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Seconds a connection may stay silent between two frames before it is closed.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Seconds a new connection has to deliver its first complete frame: a
    /// socket that connects and says nothing holds a slot only this long.
    #[serde(default = "default_first_frame_timeout_secs")]
    pub first_frame_timeout_secs: u64,
    /// Seconds a frame may take from its first byte to its last (a slow sender).
    #[serde(default = "default_frame_timeout_secs")]
    pub frame_timeout_secs: u64,
    /// Most connections served at once; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections served at once from one source address; more are
    /// closed at once, so one host cannot take every slot.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// MSH-3 of the ACKs carehub sends for input without a readable MSH.
    #[serde(default = "default_application")]
    pub application: String,
    /// MLLP over TLS: when set, every connection must complete a TLS handshake first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// `[hl7.listener.tls]`: the listener's certificate and key (PEM files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first (PEM).
    pub cert_path: std::path::PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_path: std::path::PathBuf,
    /// Seconds a client has to complete the handshake.
    #[serde(default = "default_handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
}

const fn default_handshake_timeout_secs() -> u64 {
    10
}

impl TlsConfig {
    /// Reads the certificate and key as the listener will: a configuration
    /// check finds a missing or unreadable file before `serve` does.
    pub fn check(&self) -> std::io::Result<()> {
        tls_acceptor(self).map(|_| ())
    }
}

fn tls_acceptor(tls: &TlsConfig) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("hl7.listener.tls.{what} = {}: {e}", path.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid("cert_path", &tls.cert_path, &e))?;
    if certs.is_empty() {
        return Err(invalid("cert_path", &tls.cert_path, &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_path).map_err(|e| invalid("key_path", &tls.key_path, &e))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("cert_path", &tls.cert_path, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("key_path", &tls.key_path, &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2575))
}
const fn default_max_frame_bytes() -> usize {
    1024 * 1024
}
const fn default_idle_timeout_secs() -> u64 {
    300
}
const fn default_max_connections() -> usize {
    256
}
const fn default_first_frame_timeout_secs() -> u64 {
    10
}
const fn default_frame_timeout_secs() -> u64 {
    30
}
const fn default_max_connections_per_address() -> usize {
    64
}
fn default_application() -> String {
    "CAREHUB".to_owned()
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            listen: default_listen(),
            max_frame_bytes: default_max_frame_bytes(),
            idle_timeout_secs: default_idle_timeout_secs(),
            first_frame_timeout_secs: default_first_frame_timeout_secs(),
            frame_timeout_secs: default_frame_timeout_secs(),
            max_connections: default_max_connections(),
            max_connections_per_address: default_max_connections_per_address(),
            application: default_application(),
            tls: None,
        }
    }
}

/// What the listener hands to the sink for each frame.
#[derive(Debug)]
pub struct Inbound<'a> {
    /// The frame's payload, verbatim.
    pub raw: &'a Bytes,
    pub peer: SocketAddr,
    /// The parsed message, or why it could not be parsed.
    pub parsed: Result<&'a Message<'a>, &'a ParseError>,
}

/// The sink's judgement of a message it has stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stored; content acceptable: AA (CA).
    Accepted,
    /// Stored; content in error (e.g. a required field missing): AE (CE).
    Error(AckError),
    /// Stored; not processable (unsupported type or version): AR (CR).
    Rejected(AckError),
}

/// Storage is unavailable: nothing was stored, the sender must resend.
#[derive(Debug, thiserror::Error)]
#[error("storage unavailable: {0}")]
pub struct Unavailable(pub String);

/// Where received messages go. Implementations store durably before
/// returning `Ok` (the listener acknowledges right after).
#[async_trait]
pub trait InboundSink: Send + Sync + 'static {
    async fn store(&self, inbound: Inbound<'_>) -> Result<Verdict, Unavailable>;
}

/// Accepts MLLP connections and acknowledges each message after its sink stored it.
pub struct MllpListener {
    config: ListenerConfig,
    listener: TcpListener,
    sink: Arc<dyn InboundSink>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for MllpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MllpListener").field("config", &self.config).finish()
    }
}

impl MllpListener {
    /// Binds `config.listen` (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    pub async fn bind(config: ListenerConfig, sink: Arc<dyn InboundSink>) -> std::io::Result<Self> {
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let listener = TcpListener::bind(config.listen).await?;
        Ok(MllpListener {
            config,
            listener,
            sink,
            tls,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true; connections finish the message in hand.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let limit = Arc::new(Semaphore::new(self.config.max_connections.max(1)));
        let per_address: PerAddress = Default::default();
        let handler = Arc::new(ConnectionHandler {
            config: self.config.clone(),
            sink: self.sink.clone(),
        });
        tracing::info!(listen = %self.config.listen, tls = self.tls.is_some(), "MLLP listener accepting connections");
        loop {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = shutdown.changed() => return,
            };
            let (stream, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        ComponentError { component: CONNECTOR, stage: Stage::Receiving, error_code: "accept_failed", error: &e }.emit();
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let Some(slot) = AddressSlot::take(&per_address, peer.ip(), self.config.max_connections_per_address) else {
                ComponentError {
                    component: CONNECTOR,
                    stage: Stage::Receiving,
                    error_code: "too_many_connections_from_address",
                    error: &format!(
                        "more than {} connections from one address",
                        self.config.max_connections_per_address
                    ),
                }
                .emit();
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            let shutdown = shutdown.clone();
            let tls = self.tls.clone();
            let handshake =
                Duration::from_secs(self.config.tls.as_ref().map_or(10, |t| t.handshake_timeout_secs.max(1)));
            tokio::spawn(async move {
                match tls {
                    None => handler.serve(stream, peer, shutdown).await,
                    Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => handler.serve(tls_stream, peer, shutdown).await,
                        Ok(Err(e)) => {
                            ComponentError {
                                component: CONNECTOR,
                                stage: Stage::Receiving,
                                error_code: "tls_handshake",
                                error: &e,
                            }
                            .emit();
                        }
                        Err(_) => tracing::info!(%peer, "MLLP connection closed: TLS handshake timed out"),
                    },
                }
                drop(slot);
                drop(permit);
            });
        }
    }
}

type PerAddress = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// One of an address's connection slots, given back on drop.
struct AddressSlot {
    counts: PerAddress,
    ip: std::net::IpAddr,
}

impl AddressSlot {
    fn take(counts: &PerAddress, ip: std::net::IpAddr, max: usize) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// One open connection in `carehub_hl7_connections_open`, for as long as it lives.
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        Hl7Connections {
            connector: CONNECTOR,
            delta: 1.0,
        }
        .emit();
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        Hl7Connections {
            connector: CONNECTOR,
            delta: -1.0,
        }
        .emit();
    }
}

struct ConnectionHandler {
    config: ListenerConfig,
    sink: Arc<dyn InboundSink>,
}

/// A connection's deadlines, from [`ListenerConfig`].
struct Timeouts {
    first_frame: Duration,
    idle: Duration,
    frame: Duration,
    tick: Duration,
}

impl Timeouts {
    fn of(c: &ListenerConfig) -> Self {
        let first_frame = Duration::from_secs(c.first_frame_timeout_secs.max(1));
        Timeouts {
            first_frame,
            idle: Duration::from_secs(c.idle_timeout_secs.max(1)),
            frame: Duration::from_secs(c.frame_timeout_secs.max(1)),
            tick: Duration::from_millis(250),
        }
    }
}

static ACK_SEQ: AtomicU64 = AtomicU64::new(0);

/// A control id for an ACK: at most 20 characters (the v2.5 length of MSH-10),
/// unique per process and time-ordered.
fn ack_control_id() -> String {
    let ms = chrono::Utc::now().timestamp_millis() as u64;
    let seq = ACK_SEQ.fetch_add(1, Ordering::Relaxed) % 100_000;
    format!("CH{ms}{seq:05}")
}

impl ConnectionHandler {
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) {
        // Counted down on drop, so a connection task that ends in any way
        // (a panic included) leaves the gauge right (hardening item 8).
        let _open = OpenConnection::new();
        tracing::debug!(%peer, "MLLP connection opened");
        let reason = self.serve_stream(stream, peer, shutdown).await;
        tracing::info!(%peer, reason = %reason, "MLLP connection closed");
    }

    /// Serves one connection; returns why it ended.
    async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) -> String {
        let mut framed = Framed::new(stream, MllpCodec::new(self.config.max_frame_bytes));
        let timeouts = Timeouts::of(&self.config);
        let opened = std::time::Instant::now();
        let mut first = true;
        loop {
            let next = match self
                .next_frame(&mut framed, &timeouts, first, opened, &mut shutdown)
                .await
            {
                Ok(next) => next,
                Err(reason) => return reason,
            };
            first = false;
            let frame = match next {
                None => return "closed by peer".into(),
                Some(Err(e)) => {
                    let code = match &e {
                        FrameError::TooLarge { .. } => "frame_too_large",
                        FrameError::OutsideFrame { .. } => "bytes_outside_frame",
                        FrameError::Truncated { .. } => "truncated_frame",
                        FrameError::Io(_) => "io",
                    };
                    ComponentError {
                        component: CONNECTOR,
                        stage: Stage::Receiving,
                        error_code: code,
                        error: &e,
                    }
                    .emit();
                    return format!("protocol error: {e}");
                }
                Some(Ok(frame)) => frame,
            };
            if let Some(reply) = self.handle_frame(&frame, peer).await
                && let Err(e) = framed.send(reply.as_bytes()).await
            {
                return format!("writing the ACK failed: {e}");
            }
        }
    }

    /// Waits for the next frame within the connection's deadlines; `Err`
    /// says why the connection ends instead. Before the first frame the
    /// whole wait is bounded by `first_frame_timeout_secs`; later, silence
    /// between frames by `idle_timeout_secs` and one frame's bytes by
    /// `frame_timeout_secs`. Checked once a second: the read itself is
    /// cancel-safe (the codec's buffer lives in `framed`).
    async fn next_frame<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        framed: &mut Framed<S, MllpCodec>,
        t: &Timeouts,
        first: bool,
        opened: std::time::Instant,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Result<Bytes, FrameError>>, String> {
        let waiting = std::time::Instant::now();
        let mut partial_since: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                n = framed.next() => return Ok(n),
                _ = shutdown.changed() => return Err("shutting down".into()),
                _ = tokio::time::sleep(t.tick) => {}
            }
            let partial = !framed.read_buffer().iter().all(u8::is_ascii_whitespace);
            if partial && partial_since.is_none() {
                partial_since = Some(std::time::Instant::now());
            }
            if first && opened.elapsed() >= t.first_frame {
                return Err(format!("no complete first frame within {}s", t.first_frame.as_secs()));
            }
            if let Some(since) = partial_since
                && since.elapsed() >= t.frame
            {
                return Err(format!("slow sender: a frame incomplete after {}s", t.frame.as_secs()));
            }
            if !partial && waiting.elapsed() >= t.idle {
                return Err(format!("idle for {}s between frames", t.idle.as_secs()));
            }
        }
    }

    /// Handles one frame; returns the reply to write, if any.
    async fn handle_frame(&self, frame: &Bytes, peer: SocketAddr) -> Option<String> {
        let text = match crate::codec::decode_text(frame) {
            Ok((text, _)) => text,
            Err(e) => return Some(self.refuse(frame, peer, e, None).await),
        };
        let split = match batch::split(&text) {
            Ok(s) => s,
            Err(e) => return Some(self.refuse(frame, peer, e, None).await),
        };
        if split.batch {
            return Some(self.handle_batch(&split.messages, peer).await);
        }
        if split.messages.len() > 1 {
            let e = ParseError::BadBatch(format!(
                "{} messages in one MLLP frame; send one per frame, or an FHS/BHS batch",
                split.messages.len()
            ));
            return Some(self.refuse(frame, peer, e, None).await);
        }
        let message = match Message::parse(&text) {
            Ok(m) => m,
            Err(e) => {
                let header = Message::header(&text).ok();
                return Some(self.refuse(frame, peer, e, header.as_ref()).await);
            }
        };
        self.handle_message(frame, &message, peer).await
    }

    async fn handle_message(&self, raw: &Bytes, message: &Message<'_>, peer: SocketAddr) -> Option<String> {
        let label = message.metric_label();
        MessageReceived {
            connector: CONNECTOR,
            message_type: &label,
        }
        .emit();
        let verdict = self
            .sink
            .store(Inbound {
                raw,
                peer,
                parsed: Ok(message),
            })
            .await;
        let (outcome, error) = match verdict {
            Ok(Verdict::Accepted) => (Outcome::Accept, None),
            Ok(Verdict::Error(e)) => (Outcome::Error, Some(e)),
            Ok(Verdict::Rejected(e)) => (Outcome::Reject, Some(e)),
            Err(e) => {
                ComponentError {
                    component: CONNECTOR,
                    stage: Stage::Receiving,
                    error_code: "storage_unavailable",
                    error: &e,
                }
                .emit();
                (
                    Outcome::Reject,
                    Some(AckError::new(
                        207,
                        "message not stored: storage unavailable; send it again later",
                    )),
                )
            }
        };
        let code = AckMode::of(message).receipt_code(outcome)?;
        let reply = ack::build(message, code, error.as_ref(), &ack_control_id());
        Hl7AckSent {
            connector: CONNECTOR,
            message_type: &label,
            code: code.as_str(),
            control_id: message.control_id(),
        }
        .emit();
        Some(reply)
    }

    /// Each message of a batch on its own; the answer is a batch of ACKs.
    async fn handle_batch(&self, messages: &[&str], peer: SocketAddr) -> String {
        let mut acks = Vec::with_capacity(messages.len());
        for text in messages {
            let raw = Bytes::copy_from_slice(text.as_bytes());
            match Message::parse(text) {
                Ok(m) => acks.extend(self.handle_message(&raw, &m, peer).await),
                Err(e) => {
                    let header = Message::header(text).ok();
                    acks.push(self.refuse(&raw, peer, e, header.as_ref()).await)
                }
            }
        }
        let mut out = format!("BHS|^~\\&|{}||||{}\r", self.config.application, ack::timestamp_now());
        for a in &acks {
            out.push_str(a);
        }
        out.push_str(&format!("BTS|{}\r", acks.len()));
        out
    }

    /// Input that is not a readable message: stored as failed, answered AR
    /// (built from its MSH when at least that could be read).
    async fn refuse(&self, raw: &Bytes, peer: SocketAddr, error: ParseError, header: Option<&Message<'_>>) -> String {
        MessageReceived {
            connector: CONNECTOR,
            message_type: "unparsed",
        }
        .emit();
        ComponentError {
            component: CONNECTOR,
            stage: Stage::Receiving,
            error_code: "unparsable",
            error: &error,
        }
        .emit();
        let stored = self
            .sink
            .store(Inbound {
                raw,
                peer,
                parsed: Err(&error),
            })
            .await;
        let (code, location) = error.hl7_error();
        let mut text = error.to_string();
        if stored.is_err() {
            text.push_str("; not stored: storage unavailable");
        }
        let mut err = AckError::new(code, text);
        err.location = location;
        Hl7AckSent {
            connector: CONNECTOR,
            message_type: "unparsed",
            code: AckCode::AR.as_str(),
            control_id: header.map_or("", |h| h.control_id()),
        }
        .emit();
        match header {
            Some(h) => ack::build(h, AckCode::AR, Some(&err), &ack_control_id()),
            None => ack::build_unparsed(AckCode::AR, &err, &self.config.application, &ack_control_id()),
        }
    }
}
