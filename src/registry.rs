//! The components this binary runs, one registration per connector or
//! pipeline crate. `serve` (start-up, readiness, topics) and `dlq replay`
//! only iterate this list: adding a connector is its crate, one line here
//! and one cargo feature.

#[cfg(feature = "hl7")]
use std::sync::Arc;

use carehub_connector_kit::Registry;

use crate::config::Config;

pub fn registry(cfg: &Config) -> Registry {
    let p = &cfg.pipelines;
    let mut registry = Registry::default();
    carehub_pipeline_intake::register(&mut registry, &p.intake);
    #[cfg(feature = "hl7")]
    carehub_pipeline_hl7::register(&mut registry, &p.hl7);
    #[cfg(feature = "lab")]
    carehub_pipeline_lab::register(&mut registry, &p.lab, &p.hl7.outbound_topic);
    #[cfg(feature = "hl7")]
    carehub_hl7::component::register(&mut registry, &cfg.hl7, &hl7_topics(cfg), hl7_judge(cfg));
    #[cfg(feature = "fhir")]
    carehub_fhir::component::register(&mut registry, &cfg.fhir, &fhir_topics(cfg), hl7_converter());
    #[cfg(feature = "dicom")]
    carehub_dicom::component::register(&mut registry, &cfg.dicom);
    let _ = p;
    registry
}

/// The HL7 listener's records go to the HL7 pipeline, its deliveries come from it.
#[cfg(feature = "hl7")]
fn hl7_topics(cfg: &Config) -> carehub_hl7::component::Hl7Topics {
    let p = &cfg.pipelines.hl7;
    carehub_hl7::component::Hl7Topics {
        inbound: p.topic.clone(),
        outbound: p.outbound_topic.clone(),
        outbound_group: p.outbound_group.clone(),
        outbound_enabled: p.enabled,
    }
}

/// The check before an MLLP ACK is the HL7 pipeline's mapping.
#[cfg(feature = "hl7")]
fn hl7_judge(cfg: &Config) -> Arc<dyn carehub_hl7::Hl7Judge> {
    Arc::new(carehub_pipeline_hl7::MappingJudge::with_application_acks(
        cfg.pipelines.hl7.ack_destinations.clone(),
    ))
}

/// FHIR writes of Patient and ServiceRequest feed the intake pipeline; the
/// push delivers the lab's order status.
#[cfg(feature = "fhir")]
fn fhir_topics(cfg: &Config) -> carehub_fhir::component::FhirTopics {
    #[cfg(feature = "lab")]
    let ehr_events = cfg.pipelines.lab.ehr_events_topic.clone();
    #[cfg(not(feature = "lab"))]
    let ehr_events = carehub_schema::contracts::DEFAULT_EHR_EVENTS_TOPIC.to_owned();
    carehub_fhir::component::FhirTopics {
        intake: cfg.pipelines.intake.topic.clone(),
        ehr_events,
    }
}

/// `POST /$convert-hl7v2` converts with pipelines/hl7-fhir (absent without HL7: 404).
#[cfg(feature = "fhir")]
fn hl7_converter() -> Option<carehub_fhir::Hl7Converter> {
    #[cfg(feature = "hl7")]
    return Some(Arc::new(|text: &str| {
        carehub_hl7_fhir::to_fhir(text)
            .map(|c| (c.bundle, c.unmapped.iter().map(ToString::to_string).collect()))
            .map_err(|e| e.to_string())
    }));
    #[cfg(not(feature = "hl7"))]
    None
}
