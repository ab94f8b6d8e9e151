#!/usr/bin/env bash
# carehub end to end: services up, migrate, carehub serving, a sample
# organization and patient through Kafka → pipeline → PostgreSQL (+ outbox) →
# Kafka (stored message, canonical rows, audit entries, outbound record); an
# HL7 ADT^A01 over MLLP; then an order's whole journey: a clinic's ORM^O01 over
# MLLP, the lab order on Kafka, a stand-in lab's status reports, each status
# back to the clinic over MLLP, printed as a timeline. Ends with the audit
# chain verified and the hub's metrics.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh up
echo "== building carehub" >&2
cargo build --quiet --bin carehub
bin=target/debug/carehub
mkdir -p .run
listen="${CAREHUB_HTTP__LISTEN:-127.0.0.1:8080}"
export CAREHUB_HTTP__LISTEN="$listen"

fhir_get() { # host:port path token -> body
  local host=${1%:*} port=${1#*:}
  exec 4<>"/dev/tcp/$host/$port" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\nAccept: application/fhir+json\r\nAuthorization: Bearer %s\r\n\r\n' "$2" "$1" "$3" >&4
  sed '1,/^\r$/d' <&4
  exec 4<&-
}

http_get() { # host:port path -> body (no curl needed)
  local host=${1%:*} port=${1#*:}
  exec 3<>"/dev/tcp/$host/$port" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3
  sed '1,/^\r$/d' <&3
  exec 3<&-
}

# The clinic's EHR (a stand-in that prints what it receives and answers AA)
# is the MLLP destination "northclinic" for the status of NORTHCLINIC's orders.
clinic_mllp="${DEMO_CLINIC_MLLP:-127.0.0.1:2577}"
export CAREHUB_HL7__DESTINATIONS__NORTHCLINIC__ENDPOINT="$clinic_mllp"
export CAREHUB_PIPELINES__LAB__CLINICS__NORTHCLINIC__HL7_DESTINATION=northclinic
# The FHIR endpoint's token key, for this demo only.
export CAREHUB_FHIR__AUTH__HS256_SECRET="${CAREHUB_FHIR__AUTH__HS256_SECRET:-demo-only-secret-not-for-production-use}"
fhir="${CAREHUB_FHIR__LISTEN:-127.0.0.1:8081}"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true' EXIT
"$bin" hl7 receive --listen "$clinic_mllp" >.run/clinic.log 2>&1 &
pids+=($!)

"$bin" migrate
"$bin" serve >.run/carehub.log 2>&1 &
pids+=($!)
for _ in $(seq 1 150); do
  http_get "$listen" /readyz 2>/dev/null | grep -q '"ready":true' && break
  sleep 0.2
done
echo "== /readyz: $(http_get "$listen" /readyz)"

org=$("$bin" intake send --type carehub.organization.upsert.v1 schemas/examples/carehub.organization.upsert.v1.json)
"$bin" trace "$org" >/dev/null
patient=$("$bin" intake send --type carehub.patient.upsert.v1 schemas/examples/carehub.patient.upsert.v1.json)
echo "== sent carehub.patient.upsert.v1 as event $patient"
"$bin" trace "$patient"

echo
echo "== HL7 v2 over MLLP: an ADT^A01 from a clinic's EHR, acknowledged once stored"
mllp="${CAREHUB_HL7__LISTENER__LISTEN:-127.0.0.1:2575}"
"$bin" hl7 send tests/fixtures/hl7/adt_a01.hl7 --to "$mllp"
for _ in $(seq 1 50); do
  state=$(PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d carehub -Atqc \
    "select status from message where control_id = 'ADT0001' and connector = 'hl7_mllp'" 2>/dev/null || true)
  [ "$state" = processed ] && break
  sleep 0.2
done
echo "-- message store (newest first)"
PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d carehub -c \
  "select connector, protocol, message_type, control_id, status, length(raw) as bytes from message order by received_at desc limit 3"
echo "-- canonical rows it caused (ids only)"
PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d carehub -c \
  "select 'patient' as entity, id, version from patient where source_message_id = (select id from message where control_id = 'ADT0001' and connector = 'hl7_mllp')
   union all select 'encounter', id, 1 from encounter where source_message_id = (select id from message where control_id = 'ADT0001' and connector = 'hl7_mllp')"

echo
echo "== an order's journey: clinic → carehub → lab → carehub → clinic"
run=$(date +%s)
order="PO-$run"
sed -e "s/PO-5001/$order/g" -e "s/ORM0001/ORM$run/" tests/fixtures/hl7/orm_o01.hl7 >.run/order.hl7
"$bin" lab simulate --orders 1 --step-ms 300 &
pids+=($!)
echo "-- the clinic's EHR sends ORM^O01 (order $order for a custom foot orthosis)"
"$bin" hl7 send .run/order.hl7 --to "$mllp"
echo "-- timeline (waits for the journey to end)"
"$bin" lab timeline "$order" --wait 120 --actor demo
echo "-- what the clinic's EHR received over MLLP"
grep "$order" .run/clinic.log || cat .run/clinic.log
echo "-- the same order over FHIR: its Task, read by a clinician (the read is audited)"
token=$("$bin" token issue --sub demo-clinician --role clinician)
order_id=$(PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d carehub -Atqc \
  "select id from service_order where placer_number = '$order'")
fhir_get "$fhir" "/Task/$order_id" "$token"
echo

echo
echo "== audit chain"
"$bin" audit verify
echo
echo "== metrics (excerpt)"
http_get "$listen" /metrics | grep -E '^carehub_(messages|outbox|dead|hl7)' || true
