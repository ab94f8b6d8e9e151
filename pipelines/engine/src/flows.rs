//! [`PartitionFlows`]: what a [`ConsumerRunner`](crate::ConsumerRunner)
//! received and has not yet put in a batch, per partition, and which
//! partitions have a batch in flight.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use carehub_kafka::KafkaRecord;

/// Records wait here, in arrival order per partition, until their
/// partition's batch in flight (if any) committed. One batch per partition
/// at a time is what keeps a partition's — a key's — records in order.
#[derive(Debug, Default)]
pub(crate) struct PartitionFlows {
    waiting: BTreeMap<i32, VecDeque<KafkaRecord>>,
    busy: BTreeSet<i32>,
    len: usize,
    bytes: usize,
}

impl PartitionFlows {
    pub(crate) fn push(&mut self, rec: KafkaRecord) {
        self.bytes += weight(&rec);
        self.waiting.entry(rec.partition()).or_default().push_back(rec);
        self.len += 1;
    }

    pub(crate) fn extend(&mut self, recs: impl IntoIterator<Item = KafkaRecord>) {
        for rec in recs {
            self.push(rec);
        }
    }

    /// Records waiting, over all partitions.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes waiting (keys and payloads), over all partitions.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The next batch (at most `max` records, oldest first) of every
    /// partition that has records waiting and no batch in flight; those
    /// partitions are in flight from now until [`done`](Self::done).
    pub(crate) fn ready(&mut self, max: usize) -> Vec<Vec<KafkaRecord>> {
        let mut out = Vec::new();
        for (partition, queue) in &mut self.waiting {
            if queue.is_empty() || self.busy.contains(partition) {
                continue;
            }
            let n = queue.len().min(max);
            let batch = queue.drain(..n).collect::<Vec<_>>();
            self.bytes -= batch.iter().map(weight).sum::<usize>();
            out.push(batch);
            self.len -= n;
            self.busy.insert(*partition);
        }
        self.waiting.retain(|_, q| !q.is_empty());
        out
    }

    /// `partition`'s batch in flight committed (or gave up).
    pub(crate) fn done(&mut self, partition: i32) {
        self.busy.remove(&partition);
    }
}

/// What a record weighs while it waits.
fn weight(rec: &KafkaRecord) -> usize {
    rec.payload().len() + rec.key().map_or(0, <[u8]>::len)
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;

    fn rec(partition: i32, offset: i64) -> KafkaRecord {
        KafkaRecord::from(OwnedMessage::new(
            None,
            None,
            "t".to_owned(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        ))
    }

    fn offsets(batch: &[KafkaRecord]) -> Vec<(i32, i64)> {
        batch.iter().map(|r| (r.partition(), r.offset())).collect()
    }

    #[test]
    fn a_partition_has_one_batch_in_flight_and_its_records_stay_in_order() {
        let mut flows = PartitionFlows::default();
        flows.extend([rec(0, 1), rec(1, 7), rec(0, 2), rec(0, 3)]);
        let first = flows.ready(2);
        assert_eq!(
            first.iter().map(|b| offsets(b)).collect::<Vec<_>>(),
            [vec![(0, 1), (0, 2)], vec![(1, 7)]]
        );
        assert_eq!(flows.len(), 1);
        assert_eq!(flows.bytes(), 0, "the test's records have no payload");
        // Partition 0 is in flight: its next records wait, whatever arrives.
        flows.push(rec(0, 4));
        flows.push(rec(1, 8));
        assert!(flows.ready(10).is_empty(), "both partitions are in flight");
        flows.done(1);
        assert_eq!(offsets(&flows.ready(10).concat()), [(1, 8)]);
        flows.done(0);
        assert_eq!(offsets(&flows.ready(10).concat()), [(0, 3), (0, 4)]);
        assert_eq!(flows.len(), 0);
    }
}
