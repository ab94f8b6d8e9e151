//! Pharmacy and requisition orders: RXO, RXE (MedicationRequest), ODS
//! (diet), RQD and RQ1 (requisition details).

use serde_json::{Map, Value, json};

use carehub_hl7::codec::er7::Value as V2;

use crate::datatypes as dt;
use crate::orders::*;
use crate::{Builder, Last};

impl Builder<'_> {
    /// The MedicationRequest, NutritionOrder or SupplyRequest the ORC before
    /// made, if it made one of `kind`.
    pub(crate) fn order_of(&self, kind: OrderKind) -> Option<usize> {
        self.order.filter(|&o| self.entries[o].0 == kind.resource_type())
    }

    /// RXO (pharmacy order) → the MedicationRequest's medication (RXO-1, a
    /// Medication with its form RXO-5), dose (RXO-2, units RXO-4),
    /// instructions (RXO-6 pharmacist, RXO-7 patient) and dispense (RXO-11
    /// amount, RXO-12 units, RXO-13 refills).
    pub(crate) fn rxo(&mut self, i: usize) -> bool {
        self.pharmacy_order(
            i,
            &PharmacyFields {
                code: 1,
                form: 5,
                dose: 2,
                dose_max: None,
                dose_units: 4,
                instructions: 6,
                patient_instructions: Some(7),
                dispense: 11,
                dispense_units: 12,
                refills: 13,
                rate: None,
            },
        )
    }

    /// RXE (pharmacy encoded order, RDE) → the MedicationRequest as for RXO:
    /// give code 2 (form 6), amount 3 (to 4 as a range) in units 5,
    /// administration instructions 7, dispense 10 in units 11, refills 12,
    /// rate 23 in units 24.
    pub(crate) fn rxe(&mut self, i: usize) -> bool {
        self.pharmacy_order(
            i,
            &PharmacyFields {
                code: 2,
                form: 6,
                dose: 3,
                dose_max: Some(4),
                dose_units: 5,
                instructions: 7,
                patient_instructions: None,
                dispense: 10,
                dispense_units: 11,
                refills: 12,
                rate: Some((23, 24)),
            },
        )
    }

    /// RXO / RXE → the MedicationRequest's Medication, dosage and dispense.
    fn pharmacy_order(&mut self, i: usize, at: &PharmacyFields) -> bool {
        let Some(m) = self.order_of(OrderKind::Medication) else {
            return false;
        };
        let name = self.seg(i).name().to_ascii_lowercase();
        if let Some(code) = dt::codeable(&self.f(i, at.code)) {
            let mut med = Map::new();
            med.insert("code".into(), code);
            if let Some(form) = dt::codeable(&self.f(i, at.form)) {
                med.insert("form".into(), form);
            }
            let key = self.field(i, at.code).raw().to_owned();
            let e = self.add("Medication", &format!("{name}|{key}"), med);
            let reference = self.reference(e);
            self.set(m, "medicationReference", reference);
        }
        let mut dosage = Map::new();
        let units = self.f(i, at.dose_units);
        let low = self.f(i, at.dose).text().and_then(|d| dt::quantity(&d, &units));
        let high = at
            .dose_max
            .and_then(|n| self.f(i, n).text())
            .and_then(|d| dt::quantity(&d, &units));
        let mut dose_and_rate = Map::new();
        match (low, high) {
            (Some(l), Some(h)) => {
                dose_and_rate.insert("doseRange".into(), json!({ "low": l, "high": h }));
            }
            (Some(q), None) | (None, Some(q)) => {
                dose_and_rate.insert("doseQuantity".into(), q);
            }
            (None, None) => {}
        }
        if let Some((amount, rate_units)) = at.rate {
            let rate_units = self.f(i, rate_units);
            if let Some(r) = self.f(i, amount).text().and_then(|d| dt::quantity(&d, &rate_units)) {
                dose_and_rate.insert("rateQuantity".into(), r);
            }
        }
        if !dose_and_rate.is_empty() {
            dosage.insert("doseAndRate".into(), json!([dose_and_rate]));
        }
        // CWE instructions: their text (component 2), else as written.
        let instructions = |v: V2<'_>| -> Vec<String> {
            v.repetitions()
                .filter_map(|r| r.component(2).text().or_else(|| r.text()))
                .collect()
        };
        let text = instructions(self.f(i, at.instructions));
        if !text.is_empty() {
            dosage.insert("text".into(), json!(text.join("\n")));
        }
        if let Some(n) = at.patient_instructions {
            let patient = instructions(self.f(i, n));
            if !patient.is_empty() {
                dosage.insert("patientInstruction".into(), json!(patient.join("\n")));
            }
        }
        if !dosage.is_empty() {
            self.set(m, "dosageInstruction", json!([dosage]));
        }
        let mut dispense = Map::new();
        let dispense_units = self.f(i, at.dispense_units);
        if let Some(q) = self
            .f(i, at.dispense)
            .text()
            .and_then(|d| dt::quantity(&d, &dispense_units))
        {
            dispense.insert("quantity".into(), q);
        }
        if let Some(n) = self.f(i, at.refills).text().and_then(|n| n.trim().parse::<u32>().ok()) {
            dispense.insert("numberOfRepeatsAllowed".into(), json!(n));
        }
        if !dispense.is_empty() {
            self.set(m, "dispenseRequest", Value::Object(dispense));
        }
        self.last = Last::Entry(m);
        true
    }

    /// ODS (dietary order) → the NutritionOrder's oral diet: the diet codes
    /// (ODS-3) and the instructions (ODS-4).
    pub(crate) fn ods(&mut self, i: usize) -> bool {
        let Some(n) = self.order_of(OrderKind::Nutrition) else {
            return false;
        };
        let _ = self.f(i, 1); // type (D diet, P preference, S supplement): the codes say what
        let mut diet = Map::new();
        let types: Vec<Value> = self.f(i, 3).repetitions().filter_map(|r| dt::codeable(&r)).collect();
        if !types.is_empty() {
            diet.insert("type".into(), Value::Array(types));
        }
        let text: Vec<String> = self.f(i, 4).repetitions().filter_map(|r| r.text()).collect();
        if !text.is_empty() {
            diet.insert("instruction".into(), json!(text.join("\n")));
        }
        if !diet.is_empty() {
            self.set(n, "oralDiet", Value::Object(diet));
        }
        true
    }

    /// RQD (requisition detail) → the SupplyRequest's item (RQD-2, else
    /// RQD-4), quantity (RQD-5, units RQD-6), the department it is asked
    /// of (RQD-9) and when it is needed (RQD-10).
    pub(crate) fn rqd(&mut self, i: usize) -> bool {
        let Some(r) = self.order_of(OrderKind::Supply) else {
            return false;
        };
        let item = dt::codeable(&self.f(i, 2)).or_else(|| dt::codeable(&self.f(i, 4)));
        self.set(
            r,
            "itemCodeableConcept",
            item.unwrap_or_else(|| json!({ "text": "unspecified" })),
        );
        let units = self.f(i, 6);
        let quantity = self
            .f(i, 5)
            .text()
            .and_then(|q| dt::quantity(&q, &units))
            // Required in FHIR, and not given: said to be unknown, not guessed.
            .unwrap_or_else(|| json!({ "extension": [{ "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown" }] }));
        self.set(r, "quantity", quantity);
        let department = self.f(i, 9);
        if let Some(org) = self.organization(department.component(2).text(), department.component(1).text(), None) {
            self.set(r, "deliverFrom", org);
        }
        if let Some(t) = dt::date_time(&self.f(i, 10)) {
            self.set(r, "occurrenceDateTime", json!(t));
        }
        true
    }

    /// RQ1 (after RQD) → the supplier (RQ1-2, manufacturer).
    pub(crate) fn rq1(&mut self, i: usize) -> bool {
        let Some(r) = self.order_of(OrderKind::Supply) else {
            return false;
        };
        let maker = self.f(i, 2);
        match self.organization(maker.component(2).text(), maker.component(1).text(), None) {
            Some(org) => {
                self.set(r, "supplier", json!([org]));
                true
            }
            None => false,
        }
    }
}

/// Where RXO and RXE keep the same things.
struct PharmacyFields {
    code: usize,
    form: usize,
    dose: usize,
    dose_max: Option<usize>,
    dose_units: usize,
    instructions: usize,
    patient_instructions: Option<usize>,
    dispense: usize,
    dispense_units: usize,
    refills: usize,
    /// The give rate's amount and units.
    rate: Option<(usize, usize)>,
}
