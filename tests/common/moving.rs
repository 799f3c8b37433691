//! State that moves with its partition: users tied to partitions (user `p{p}-u{u}` views on
//! partition p), and the changelog their state moves through.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use streamrec::config::Config;

use super::unique;

pub const USERS_PER_PARTITION: usize = 4;
pub const VIEWS: usize = 5;

/// `VIEWS` views by every user of `partitions`, partitions interleaved, from `start` on;
/// `round` makes the items new.
pub fn produce_views(config: &Config, round: usize, start: i64, partitions: &[i32]) -> u64 {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .create()
        .unwrap();
    let mut sent = 0;
    for k in 0..VIEWS {
        for u in 0..USERS_PER_PARTITION {
            for &p in partitions {
                let user = format!("p{p}-u{u}");
                let item = format!("r{round}-i{}", (u + k) % 7);
                let ts = start + (k * 10 + u) as i64;
                let json =
                    format!(r#"{{"type":"view","user_id":"{user}","item_id":"{item}","ts":{ts}}}"#);
                let topic = &config.kafka.input_topics[0];
                let record = BaseRecord::to(topic).partition(p).key(&user).payload(&json);
                producer.send(record).unwrap();
                sent += 1;
            }
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    sent
}

/// A consumer of one partition of `topic` from its start, which reports the partition's end.
pub fn from_start(brokers: &str, topic: &str, partition: i32) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("from-start"))
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    consumer
}

/// The latest record (encoded) of every user in one changelog partition.
pub fn changelog_users(brokers: &str, topic: &str, partition: i32) -> HashMap<String, Vec<u8>> {
    let consumer = from_start(brokers, topic, partition);
    let mut latest = HashMap::new();
    loop {
        let message = match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(message)) => message,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            other => panic!("reading {topic}/{partition}: {other:?}"),
        };
        let is_user = message.headers().is_some_and(|h| {
            h.iter()
                .any(|h| h.key == "streamrec-changelog" && h.value == Some(b"user".as_slice()))
        });
        if is_user {
            let user = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
            latest.insert(user, message.payload().unwrap().to_vec());
        }
    }
    latest
}
