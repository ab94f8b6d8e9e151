//! `[pipelines.lab]`.

use serde::{Deserialize, Serialize};

use crate::{ClinicRoute, LabRouting};

/// The lab's manufacturing over Kafka: orders out, status reports back, the
/// clinic told each step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabConfig {
    /// Run the lab dispatch and status consumers in `carehub serve`.
    #[serde(default = "carehub_core::default_true")]
    pub enabled: bool,
    /// Where new and changed orders appear (`carehub.order.upserted.v1`):
    /// the events topic of the pipelines that take orders.
    #[serde(default = "carehub_schema::contracts::default_events_topic")]
    pub events_topic: String,
    /// Consumer group that turns orders into lab orders.
    #[serde(default = "default_lab_dispatch_group")]
    pub dispatch_group: String,
    /// Orders for the lab (`carehub.lab.order.v1`), keyed by order id.
    #[serde(default = "default_lab_orders_topic")]
    pub orders_topic: String,
    /// Status reports from the lab (`carehub.lab.status.v1`); dead letters
    /// go to `<status_topic>.dlq`.
    #[serde(default = "default_lab_status_topic")]
    pub status_topic: String,
    /// Consumer group of the status reports.
    #[serde(default = "default_lab_status_group")]
    pub status_group: String,
    /// Results from the lab (`carehub.lab.results.v1`: measurements, QC
    /// data); dead letters go to `<results_topic>.dlq`.
    #[serde(default = "default_lab_results_topic")]
    pub results_topic: String,
    /// Consumer group of the results.
    #[serde(default = "default_lab_results_group")]
    pub results_group: String,
    /// Order status for EHRs (`carehub.ehr.order_status.v1`: FHIR Task and
    /// ServiceRequest), keyed by order id.
    #[serde(default = "default_ehr_events_topic")]
    pub ehr_events_topic: String,
    /// Send every clinic's orders to the lab; false: only clinics listed
    /// under `clinics`.
    #[serde(default = "carehub_core::default_true")]
    pub all_clinics: bool,
    /// MSH-3 and MSH-4 of the HL7 messages carehub sends to clinics.
    #[serde(default = "default_carehub")]
    pub hl7_sending_application: String,
    #[serde(default = "default_carehub")]
    pub hl7_sending_facility: String,
    /// What each clinic receives, by its identifier value (for HL7 orders the
    /// sending facility, MSH-4): `hl7_destination` (a `[hl7.destinations]`
    /// name; none: no HL7), `hl7_order_message` (`ORM^O01` or `OML^O21`),
    /// `hl7_application` (MSH-5), `fhir_events` (default true).
    #[serde(default)]
    pub clinics: std::collections::BTreeMap<String, ClinicRoute>,
}

fn default_lab_dispatch_group() -> String {
    "carehub-lab-dispatch".to_owned()
}
fn default_lab_orders_topic() -> String {
    "lab.orders.v1".to_owned()
}
fn default_lab_status_topic() -> String {
    "lab.status.v1".to_owned()
}
fn default_lab_status_group() -> String {
    "carehub-lab-status".to_owned()
}
fn default_lab_results_topic() -> String {
    "lab.results.v1".to_owned()
}
fn default_lab_results_group() -> String {
    "carehub-lab-results".to_owned()
}
fn default_ehr_events_topic() -> String {
    carehub_schema::contracts::DEFAULT_EHR_EVENTS_TOPIC.to_owned()
}
fn default_carehub() -> String {
    "CAREHUB".to_owned()
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            enabled: true,
            events_topic: carehub_schema::contracts::default_events_topic(),
            dispatch_group: default_lab_dispatch_group(),
            orders_topic: default_lab_orders_topic(),
            status_topic: default_lab_status_topic(),
            status_group: default_lab_status_group(),
            results_topic: default_lab_results_topic(),
            results_group: default_lab_results_group(),
            ehr_events_topic: default_ehr_events_topic(),
            all_clinics: true,
            hl7_sending_application: default_carehub(),
            hl7_sending_facility: default_carehub(),
            clinics: Default::default(),
        }
    }
}

impl LabConfig {
    pub fn routing(&self) -> LabRouting {
        LabRouting {
            all_clinics: self.all_clinics,
            hl7_sending_application: self.hl7_sending_application.clone(),
            hl7_sending_facility: self.hl7_sending_facility.clone(),
            clinics: self.clinics.clone(),
        }
    }
}
