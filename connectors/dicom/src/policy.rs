//! Who may associate: deny by default. An association is accepted only
//! when its called AE title is carehub's, its calling AE title a configured
//! peer's, and its source address one of that peer's; otherwise it is
//! rejected at association time (A-ASSOCIATE-RJ, PS3.8 9.3.4) with the
//! reason the standard has for it.

use std::net::IpAddr;

use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};

use crate::config::{PeerConfig, Service};

/// The peers, and the address this association comes from.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    pub peers: Vec<PeerConfig>,
    pub source: IpAddr,
}

impl PeerPolicy {
    /// The peer calling as `ae_title` from this association's address.
    pub fn peer(&self, ae_title: &str) -> Option<&PeerConfig> {
        let ae_title = ae_title.trim();
        self.peers
            .iter()
            .find(|p| p.ae_title == ae_title && p.addresses.contains(&self.source))
    }

    /// Whether the peer calling as `ae_title` may use `service`.
    pub fn allows(&self, ae_title: &str, service: Service) -> bool {
        self.peer(ae_title).is_some_and(|p| p.services.contains(&service))
    }
}

impl AccessControl for PeerPolicy {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        // A known AE title from an address it was not given is, for this
        // association, not a peer carehub recognises.
        match self.peer(calling_ae_title) {
            Some(_) => Ok(()),
            None => Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(source: &str) -> PeerPolicy {
        PeerPolicy {
            peers: vec![PeerConfig {
                ae_title: "MODALITY1".to_owned(),
                addresses: vec!["127.0.0.1".parse().expect("ip")],
                services: vec![Service::Echo],
            }],
            source: source.parse().expect("ip"),
        }
    }

    #[test]
    fn only_a_configured_peer_from_its_address_calling_carehub_is_accepted() {
        let p = policy("127.0.0.1");
        assert_eq!(p.check_access("CAREHUB", "MODALITY1", "CAREHUB", None), Ok(()));
        assert_eq!(
            p.check_access("CAREHUB", "MODALITY1", "OTHER", None),
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        );
        assert_eq!(
            p.check_access("CAREHUB", "STRANGER", "CAREHUB", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        );
        assert_eq!(
            policy("10.0.0.9").check_access("CAREHUB", "MODALITY1", "CAREHUB", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized),
            "the right title from another address"
        );
        assert!(p.allows("MODALITY1", Service::Echo));
        assert!(!p.allows("MODALITY1", Service::Store));
    }
}
