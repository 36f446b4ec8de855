//! Client settings: where every basketflow Kafka client's configuration starts, and the
//! consumer and producer set-ups that several clients share.
//!
//! Every setting that differs from librdkafka's default says why on its line. Settings that one
//! client alone needs (a producer's batching, the transactional producer's timeouts, a delivery
//! deadline) stay with that client, next to the reason for them.

use rdkafka::config::ClientConfig;

/// A configuration for a client of `brokers`, with the settings every basketflow client shares.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut c = unnamed_client_config(brokers);
    // Name the client in broker logs and metrics.
    c.set("client.id", "basketflow");
    c
}

/// [`client_config`] without the `client.id`: the client goes by librdkafka's default,
/// `rdkafka`. The graph's source consumers and the traffic generator have never set one; they
/// keep it so that nothing keyed by client id on the brokers (quotas, log filters) changes.
/// New clients use [`client_config`].
pub fn unnamed_client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// `base` made a producer of keyed messages (key = shopper) for topics that other clients,
/// Java ones included, read and write: the tree builder, the privacy commands, the collector and
/// the generator. Each adds its own batching and delivery settings.
pub fn keyed_producer(base: ClientConfig) -> ClientConfig {
    let mut c = base;
    // Retries never duplicate or reorder messages within a partition.
    c.set("enable.idempotence", "true")
        // Same key -> same partition as Java clients (Kafka's default murmur2).
        .set("partitioner", "murmur2_random");
    c
}

/// The consumer of the graph's Kafka source (`basketflow_ingest::kafka_source`): partitions
/// assigned by hand, offsets kept by basketflow's durable progress, partition ends reported.
pub fn source_consumer_config(brokers: &str) -> ClientConfig {
    let mut c = unnamed_client_config(brokers);
    // Offsets are basketflow's own business (durable progress), never the group's.
    c.set("group.id", "basketflow-graph")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // We need to know when a partition is idle: its EOF moves the frontier on.
        .set("enable.partition.eof", "true")
        // Read only committed data: a producer's aborted transaction never enters the graph.
        .set("isolation.level", "read_committed")
        // Answer a fetch as soon as one byte is there, waiting at most 10 ms otherwise. The
        // end of a partition (EOF, which lets its bound follow the wall clock) is only seen on
        // a fetch answer: at 100 ms the frontier, and so every decision, waited up to that long
        // behind a partition that had just been read to its end (10,000 events/s: event ->
        // decision p99 1,349 ms before, 561 ms after, with the other changes of the same day).
        .set("fetch.wait.max.ms", "10");
    c
}

/// A consumer that reads a topic once, from an offset to the end it has now, committed data
/// only, under `group_id` (named in the broker's logs; no offsets are committed).
pub(crate) fn committed_reader_config(brokers: &str, group_id: &str) -> ClientConfig {
    let mut c = client_config(brokers);
    // Our own offsets; no group state.
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        // Only committed transactions' records count.
        .set("isolation.level", "read_committed")
        // Stop at the end.
        .set("enable.partition.eof", "true");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(c: &ClientConfig) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = c
            .config_map()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = p
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn every_client_names_the_brokers_and_only_named_clients_set_a_client_id() {
        assert_eq!(
            settings(&client_config("b:9092")),
            pairs(&[("bootstrap.servers", "b:9092"), ("client.id", "basketflow")])
        );
        assert_eq!(
            settings(&unnamed_client_config("b:9092")),
            pairs(&[("bootstrap.servers", "b:9092")])
        );
    }

    #[test]
    fn a_keyed_producer_is_idempotent_and_partitions_as_java_clients_do() {
        assert_eq!(
            settings(&keyed_producer(unnamed_client_config("b"))),
            pairs(&[
                ("bootstrap.servers", "b"),
                ("enable.idempotence", "true"),
                ("partitioner", "murmur2_random"),
            ])
        );
    }

    #[test]
    fn the_source_consumer_keeps_its_settings() {
        assert_eq!(
            settings(&source_consumer_config("b")),
            pairs(&[
                ("bootstrap.servers", "b"),
                ("group.id", "basketflow-graph"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                ("isolation.level", "read_committed"),
                ("fetch.wait.max.ms", "10"),
            ])
        );
    }

    #[test]
    fn a_committed_reader_reads_committed_data_to_the_end_without_group_offsets() {
        assert_eq!(
            settings(&committed_reader_config("b", "basketflow-progress")),
            pairs(&[
                ("bootstrap.servers", "b"),
                ("client.id", "basketflow"),
                ("group.id", "basketflow-progress"),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
                ("enable.partition.eof", "true"),
            ])
        );
    }
}
