//! `[dicom]`: the association server and the peers allowed to use it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What a peer may ask for. PS3.4 services by their DIMSE name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// C-ECHO, the Verification service class.
    Echo,
    /// C-STORE, the Storage service class.
    Store,
    /// C-FIND on the Modality Worklist.
    Worklist,
}

/// `[dicom.peers.<name>]`: an application entity allowed to associate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's calling AE title (1 to 16 characters, PS3.5 AE).
    pub ae_title: String,
    /// Source addresses it may connect from; empty: none (deny by default).
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// Services it may use; empty: echo only.
    #[serde(default = "default_services")]
    pub services: Vec<Service>,
}

fn default_services() -> Vec<Service> {
    vec![Service::Echo]
}

/// `[dicom]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomConfig {
    /// Whether the association server runs.
    #[serde(default)]
    pub enabled: bool,
    /// Address of the DIMSE association server.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// carehub's AE title: an association calling another is rejected.
    #[serde(default = "default_ae_title")]
    pub ae_title: String,
    /// Largest P-DATA PDU carehub accepts (bytes, as negotiated).
    #[serde(default = "default_max_pdu")]
    pub max_pdu_length: u32,
    /// Seconds a peer may stay silent (association negotiation included)
    /// before its association is aborted.
    #[serde(default = "default_idle_secs")]
    pub idle_secs: u64,
    /// Associations open at once; more wait to be accepted.
    #[serde(default = "default_max_associations")]
    pub max_associations: usize,
    /// Topic the stored instances' records go to (`carehub.dicom.instance.received.v1`).
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Directory the instances are kept in, by content hash.
    #[serde(default = "default_storage")]
    pub storage: String,
    /// Largest instance accepted (bytes); a larger one is refused (A700).
    #[serde(default = "default_max_instance_bytes")]
    pub max_instance_bytes: u64,
    /// Longest wait for the message store before a C-STORE fails (A700).
    #[serde(default = "default_store_timeout_ms")]
    pub store_timeout_ms: u64,
    /// The peers allowed; an association from anything else is rejected.
    #[serde(default)]
    pub peers: BTreeMap<String, PeerConfig>,
}

fn default_listen() -> String {
    "127.0.0.1:11112".to_owned()
}
fn default_ae_title() -> String {
    "CAREHUB".to_owned()
}
const fn default_max_pdu() -> u32 {
    16_384
}
const fn default_idle_secs() -> u64 {
    30
}
const fn default_max_associations() -> usize {
    32
}
fn default_topic() -> String {
    "carehub.dicom.inbound.v1".to_owned()
}
fn default_storage() -> String {
    "data/dicom".to_owned()
}
const fn default_max_instance_bytes() -> u64 {
    4 << 30
}
const fn default_store_timeout_ms() -> u64 {
    10_000
}

impl Default for DicomConfig {
    fn default() -> Self {
        DicomConfig {
            enabled: false,
            listen: default_listen(),
            ae_title: default_ae_title(),
            max_pdu_length: default_max_pdu(),
            idle_secs: default_idle_secs(),
            max_associations: default_max_associations(),
            topic: default_topic(),
            storage: default_storage(),
            max_instance_bytes: default_max_instance_bytes(),
            store_timeout_ms: default_store_timeout_ms(),
            peers: BTreeMap::new(),
        }
    }
}
