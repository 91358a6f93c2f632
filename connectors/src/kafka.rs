//! Kafka: the record source (bounded snapshot or consumer group) and the producer behind the
//! Kafka sink and the dead-letter queue.
//!
//! Works with any Kafka-protocol broker through librdkafka (the `rdkafka` crate's bundled
//! build). Offsets are never committed automatically: the runtime calls [`Source::commit`]
//! after the sink has acknowledged an epoch's output, which gives at-least-once delivery.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use self::batch::{BatchQueue, Consumed, Taken};
use crate::record::{RecordBatchCollector, RecordPosition, SourceBatch};
use crate::source::{Positions, RevokeHook, Source};
use crate::{ConnectorError, Result};

mod batch;

/// Where a source starts reading each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    Earliest,
    Latest,
    /// This offset in each partition read (clamped to the partition's earliest offset).
    At(i64),
}

impl std::str::FromStr for StartOffset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "earliest" | "beginning" => Ok(StartOffset::Earliest),
            "latest" | "end" => Ok(StartOffset::Latest),
            n => n
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(StartOffset::At)
                .ok_or_else(|| {
                    format!(
                        "invalid offset '{n}' (expected earliest, latest or a non-negative number)"
                    )
                }),
        }
    }
}

/// Connection settings shared by consumers and producers.
#[derive(Clone)]
pub struct KafkaConnection {
    /// `host:port[,host:port…]`
    pub brokers: String,
    /// How long metadata requests and flushes may take before we report the broker unreachable.
    pub timeout: Duration,
    /// librdkafka properties for consumers (security, tuning), set before [`Self::properties`].
    pub consumer_properties: Vec<(String, String)>,
    /// librdkafka properties for producers, set after the producer's defaults (`linger.ms`).
    pub producer_properties: Vec<(String, String)>,
    /// librdkafka properties for every client (`--kafka-property`), set last: they win over the
    /// role's. What delivery depends on (manual commits, the idempotent producer with
    /// `acks=all`) is set after them and cannot be turned off.
    pub properties: Vec<(String, String)>,
}

/// Properties shown with the values of secrets (passwords, SASL user names, keys) hidden.
pub fn redacted_properties(properties: &[(String, String)]) -> Vec<String> {
    properties
        .iter()
        .map(|(k, v)| match is_secret_property(k) {
            true => format!("{k}=***"),
            false => format!("{k}={v}"),
        })
        .collect()
}

/// True for a librdkafka property whose value is a secret.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "sasl.username",
        "oauthbearer.config",
        "key.pem",
    ]
    .iter()
    .any(|s| key.contains(s))
}

impl std::fmt::Debug for KafkaConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConnection")
            .field("brokers", &self.brokers)
            .field("timeout", &self.timeout)
            .field(
                "consumer_properties",
                &redacted_properties(&self.consumer_properties),
            )
            .field(
                "producer_properties",
                &redacted_properties(&self.producer_properties),
            )
            .field("properties", &redacted_properties(&self.properties))
            .finish()
    }
}

/// Which kind of client a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Consumer,
    Producer,
}

impl KafkaConnection {
    /// Settings for `brokers` with the given timeout and no extra properties.
    pub fn new(brokers: impl Into<String>, timeout: Duration) -> Self {
        Self {
            brokers: brokers.into(),
            timeout,
            consumer_properties: Vec::new(),
            producer_properties: Vec::new(),
            properties: Vec::new(),
        }
    }

    /// The base settings, then `defaults`, then the role's properties, then the common ones.
    fn client_config(&self, role: Role, defaults: &[(&str, String)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "velo-sql")
            .set("socket.connection.setup.timeout.ms", "10000")
            // librdkafka 2.x drops its bootstrap connection once metadata names the brokers,
            // and connects to the named broker no sooner than half `reconnect.backoff.ms`
            // after its last cluster connection (100 ms by default): every client's first
            // request after its metadata waited about 50 ms. At 20 ms that is the floor,
            // 11 ms; a broker that is down is still retried with a backoff doubling up to
            // `reconnect.backoff.max.ms` (10 s).
            .set("reconnect.backoff.ms", "20")
            .set("log_level", "3");
        for (k, v) in defaults {
            config.set(*k, v);
        }
        let own = match role {
            Role::Consumer => &self.consumer_properties,
            Role::Producer => &self.producer_properties,
        };
        for (k, v) in own.iter().chain(&self.properties) {
            config.set(k, v);
        }
        config
    }

    /// Whether clients connect without TLS or SASL (`security.protocol` unset or `plaintext`).
    pub fn plaintext(&self) -> bool {
        self.consumer_properties
            .iter()
            .chain(&self.properties)
            .rfind(|(k, _)| k == "security.protocol")
            .is_none_or(|(_, v)| v.eq_ignore_ascii_case("plaintext"))
    }

    /// A consumer's base settings (metadata clients, sources).
    fn consumer_base(&self) -> ClientConfig {
        // librdkafka stops fetching a partition whose local queue is full (`queued.min.messages`)
        // and, by default, waits a whole second before fetching it again: a consumer that
        // drains the queue in milliseconds then idles most of its wall time.
        self.client_config(Role::Consumer, &[("fetch.queue.backoff.ms", "10".into())])
    }

    /// A consumer's settings in group `group` that never commits by itself.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.consumer_base();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        config
    }

    fn unreachable(&self, e: &KafkaError) -> ConnectorError {
        let mut detail = e.to_string();
        // What librdkafka said about the connection (a TLS handshake or SASL failure, a
        // refused connection), when it said it during this request.
        let recent = LAST_CLIENT_ERROR.lock().ok().and_then(|last| {
            last.as_ref()
                .filter(|(at, _)| at.elapsed() <= self.timeout + Duration::from_secs(1))
                .map(|(_, reason)| reason.clone())
        });
        match recent {
            Some(reason) if !reason.contains("brokers are down") => {
                detail = format!("{detail}; the client said: {reason}")
            }
            _ => detail.push_str(
                " (is the address right? Does the broker require TLS or SASL: security.protocol?)",
            ),
        }
        ConnectorError::BrokerUnreachable {
            brokers: self.brokers.clone(),
            timeout_secs: self.timeout.as_secs().max(1),
            detail,
        }
    }

    /// [`Self::unreachable`] for a consumer without assigned partitions: its queue is served
    /// first (nothing can be consumed), so librdkafka's reason for the failure is delivered.
    fn unreachable_unassigned<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        e: &KafkaError,
    ) -> ConnectorError {
        if !consumer.assignment().is_ok_and(|a| a.count() > 0) {
            let _ = consumer.poll(Duration::from_millis(100));
        }
        self.unreachable(e)
    }

    /// The partitions of `topic`, or [`ConnectorError::UnknownTopic`] listing what exists.
    pub fn partitions<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
    ) -> Result<Vec<i32>> {
        let metadata = consumer
            .fetch_metadata(None, self.timeout)
            .map_err(|e| self.unreachable_unassigned(consumer, &e))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            let mut existing: Vec<String> = metadata
                .topics()
                .iter()
                .map(|t| t.name().to_string())
                .filter(|n| !n.starts_with("__"))
                .collect();
            existing.sort();
            return Err(ConnectorError::UnknownTopic {
                topic: topic.to_string(),
                brokers: self.brokers.clone(),
                existing: names_like(topic, &existing),
            });
        };
        let mut partitions: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
        partitions.sort_unstable();
        Ok(partitions)
    }

    /// Names of the topics on the broker (internal `__` topics left out).
    pub fn topics(&self) -> Result<Vec<String>> {
        MetadataClient::new(self)?.topics()
    }
}

/// The topics to name when `missing` does not exist: all of them when there are few, else the
/// ones most like it (longest common prefix) and how many more there are.
pub fn names_like(missing: &str, topics: &[String]) -> String {
    const SHOWN: usize = 10;
    if topics.is_empty() {
        return "(none)".into();
    }
    if topics.len() <= SHOWN * 2 {
        return topics.join(", ");
    }
    let common = |t: &str| {
        t.chars()
            .zip(missing.chars())
            .take_while(|(a, b)| a == b)
            .count()
    };
    let mut ranked: Vec<&String> = topics.iter().collect();
    ranked.sort_by_key(|t| (std::cmp::Reverse(common(t)), t.as_str()));
    let mut shown: Vec<&str> = ranked.iter().take(SHOWN).map(|t| t.as_str()).collect();
    shown.sort_unstable();
    format!(
        "{} … and {} more",
        shown.join(", "),
        topics.len() - shown.len()
    )
}

/// How a bare consumer takes its messages from librdkafka (see [`count_messages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeCalls {
    /// One poll per message, as most consumers are written (the `rdkafka` crate's poll).
    PerMessage,
    /// librdkafka's batch call, as the engine's source takes them.
    Batched,
}

/// Reads every message `topic` holds now, from the beginning of each partition to its end, with
/// a bare consumer of `connection`'s settings, and counts them: nothing is decoded or kept.
/// What librdkafka alone costs, for `velo-sql bench` to set the engine against.
///
/// A partition ends at the end offset asked when the read starts, as a bounded read of the
/// engine ends (or at librdkafka's end-of-partition event, should the last offsets hold no
/// message). Waiting for that event alone added a last empty fetch: on the local broker, up to
/// its whole `fetch.wait.max.ms` (500 ms) of idle wall time.
pub fn count_messages(
    connection: &KafkaConnection,
    topic: &str,
    calls: ConsumeCalls,
) -> Result<u64> {
    let mut config = connection.consumer_config("velo-sql-count");
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer<QuietContext> = config
        .create_with_context(QuietContext)
        .map_err(|e| ConnectorError::kafka("creating a consumer", e))?;
    let consumer = OwnedConsumer::new(consumer, connection.plaintext());
    let mut assignment = TopicPartitionList::new();
    // The partitions still to read, and the offset each ends before.
    let mut open = BTreeMap::new();
    for partition in connection.partitions(&consumer, topic)? {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, connection.timeout)
            .map_err(|e| connection.unreachable(&e))?;
        if high > low {
            open.insert(partition, high);
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(low))
                .map_err(|e| ConnectorError::kafka(format!("assigning '{topic}'"), e))?;
        }
    }
    consumer
        .assign(&assignment)
        .map_err(|e| ConnectorError::kafka(format!("assigning '{topic}'"), e))?;
    // Dropped before the consumer (locals drop in reverse order).
    let mut batches = match calls {
        ConsumeCalls::PerMessage => None,
        ConsumeCalls::Batched => BatchQueue::new(&consumer),
    };
    if let Some(batches) = &batches {
        batches.forward(&consumer, topic, open.keys().copied());
    }
    let mut count = 0;
    // Counts a message below its partition's end; ends partitions.
    let tally =
        |open: &mut BTreeMap<i32, i64>, count: &mut u64, message: Consumed<'_>| match message
            .error()
        {
            None => {
                let partition = message.partition();
                if let Some(&end) = open.get(&partition) {
                    if message.offset() < end {
                        *count += 1;
                    }
                    if message.offset() + 1 >= end {
                        open.remove(&partition);
                    }
                }
                Ok(())
            }
            Some(KafkaError::PartitionEOF(partition)) => {
                open.remove(&partition);
                Ok(())
            }
            Some(e) => Err(ConnectorError::kafka(format!("reading '{topic}'"), e)),
        };
    let nothing = |open: &BTreeMap<i32, i64>| {
        ConnectorError::Config(format!(
            "reading '{topic}': nothing arrived for {:?} with partitions {:?} not at their end",
            connection.timeout,
            open.keys().collect::<Vec<_>>()
        ))
    };
    while !open.is_empty() {
        // The consumer's own queue first (with batches: what came before the forwarding).
        let wait = match &batches {
            Some(b) if !b.consumer_has_more() => None,
            Some(_) => Some(Duration::ZERO),
            None => Some(connection.timeout),
        };
        if let Some(wait) = wait {
            match consumer.poll(wait) {
                // Alive while the message is.
                Some(Ok(message)) => tally(&mut open, &mut count, unsafe {
                    Consumed::from_ptr(message.ptr())
                })?,
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    open.remove(&partition);
                }
                Some(Err(e)) => return Err(ConnectorError::kafka(format!("reading '{topic}'"), e)),
                None if batches.is_none() => return Err(nothing(&open)),
                None => {}
            }
            continue;
        }
        let Some(batches) = batches.as_mut() else {
            continue;
        };
        let mut taken = batches.take(1024, Duration::ZERO);
        if taken.is_empty() {
            taken = batches.take(1, connection.timeout);
            if taken.is_empty() && !batches.consumer_has_more() {
                return Err(nothing(&open));
            }
        }
        while let Some(message) = taken.next() {
            tally(&mut open, &mut count, message)?;
        }
    }
    Ok(count)
}

/// Deletes `topic` (a benchmark's own); waits up to the connection's timeout for the answer.
pub async fn delete_topic(connection: &KafkaConnection, topic: &str) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = connection
        .consumer_base()
        .create()
        .map_err(|e| ConnectorError::kafka("creating an admin client", e))?;
    let options = AdminOptions::new().operation_timeout(Some(connection.timeout));
    let answers = admin
        .delete_topics(&[topic], &options)
        .await
        .map_err(|e| ConnectorError::kafka(format!("deleting '{topic}'"), e))?;
    for answer in answers {
        if let Err((name, code)) = answer {
            return Err(ConnectorError::Config(format!("deleting '{name}': {code}")));
        }
    }
    Ok(())
}

/// One client asking the broker for metadata, kept (a health check asks often).
pub struct MetadataClient {
    consumer: BaseConsumer<QuietContext>,
    connection: KafkaConnection,
}

impl MetadataClient {
    /// A client of `connection`'s brokers (nothing is asked yet).
    pub fn new(connection: &KafkaConnection) -> Result<Self> {
        Ok(Self {
            consumer: connection
                .consumer_base()
                .create_with_context(QuietContext)
                .map_err(|e| ConnectorError::kafka("creating a metadata client", e))?,
            connection: connection.clone(),
        })
    }

    /// Names of the topics on the broker (internal `__` topics left out).
    pub fn topics(&self) -> Result<Vec<String>> {
        let metadata = self
            .consumer
            .fetch_metadata(None, self.connection.timeout)
            .map_err(|e| self.connection.unreachable_unassigned(&self.consumer, &e))?;
        let mut names: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|n| !n.starts_with("__"))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// How a [`KafkaSource`] reads.
#[derive(Debug, Clone)]
pub enum ReadMode {
    /// Read from `start` up to the end offsets seen when the source opens, then stop.
    /// Never commits. `partition` restricts the read to one partition.
    Snapshot {
        start: StartOffset,
        partition: Option<i32>,
        group_id: Option<String>,
    },
    /// Join consumer group `group_id` and read forever; resume from the group's committed
    /// offsets, or from `reset` (earliest/latest) where it has none.
    Group {
        group_id: String,
        reset: StartOffset,
        /// How the member is known to the group across restarts (`group.instance.id`, static
        /// membership): a restarted member gets its partitions back at once instead of after
        /// the session timeout.
        instance_id: Option<String>,
        /// How long the group waits for a silent member before giving its partitions away.
        session_timeout: Option<Duration>,
        /// Read only this partition: assigned, not subscribed (no rebalances), starting at the
        /// group's committed offset for it; offsets are still committed for the group.
        partition: Option<i32>,
    },
    /// Read every partition forever, without a group or commits (follows a table topic's
    /// updates): from the offset in `from` (where an earlier snapshot ended), else from the
    /// partition's start (a partition the table has not read).
    Follow { from: BTreeMap<i32, i64> },
}

/// The consumer's context: where each partition starts when the group assigns it.
///
/// librdkafka starts an assigned partition at the group's committed offset. A job whose state
/// holds records past that offset (reading on after a commit that follows checkpoints) must
/// start at its own position instead, or records would be counted twice — unless another
/// member of the group has committed further meanwhile (the partition was its), then the
/// committed offset; and a job restored from a checkpoint starts at the checkpoint's offsets
/// the first time it is assigned each partition, even before the committed offsets (a
/// fallback to an older checkpoint), or records would be lost — and when such a partition is
/// assigned again before the job has committed it, the commit its checkpoint went back behind
/// is not another member's progress. The rebalance callback sets those offsets in the
/// assignment.
pub struct PositionsContext {
    topic: String,
    /// From a restored checkpoint: used as they are, once per partition.
    restore_at: Mutex<Positions>,
    /// How far this member has read each partition.
    read_to: Mutex<Positions>,
    /// For a partition given back to this member: the offset the group had committed when it
    /// came back, which this member's commits never go below (see
    /// [`PositionsContext::committable`]), and whether the log was seen to reach it. A job
    /// keeps the position it reached in a partition the group took away; if the partition
    /// comes back before the job reads more of it, committing that position would rewind what
    /// the member that held it meanwhile committed.
    floors: Mutex<BTreeMap<i32, (i64, bool)>>,
    /// For a partition started at a restored checkpoint's offset below the group's committed
    /// one (a fallback to an older checkpoint): that committed offset, which no state of this
    /// job holds. Until this member commits the partition, the group committing just that
    /// means no member has read past it since, and an assignment again starts where the job
    /// has read to, not there: jumping to it would skip records the restored state lacks.
    superseded: Mutex<BTreeMap<i32, i64>>,
    /// Set by each assignment the group gives: its partitions are to be forwarded to the
    /// source's batch queue.
    assigned: AtomicBool,
    timeout: Duration,
    /// Asked for the positions to commit before partitions are revoked (see
    /// [`Source::before_revoke`]).
    before_revoke: Mutex<Option<RevokeHook>>,
}

impl PositionsContext {
    /// Commits what the revoke hook returns for the partitions of `tpl` (those about to be
    /// revoked), before they go: their next owner starts after it.
    fn commit_before_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let Some(hook) = self
            .before_revoke
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return;
        };
        let positions = hook();
        let mut offsets = TopicPartitionList::new();
        for e in tpl.elements_for_topic(&self.topic) {
            if let Some(&offset) = positions.get(&e.partition()) {
                let _ = offsets.add_partition_offset(
                    &self.topic,
                    e.partition(),
                    Offset::Offset(self.committable(consumer, e.partition(), offset)),
                );
            }
        }
        if offsets.count() == 0 {
            return;
        }
        match consumer.commit(&offsets, CommitMode::Sync) {
            Ok(()) => self.committed(&offsets),
            Err(e) => tracing::warn!(
                topic = %self.topic,
                "could not commit the offsets of partitions a rebalance takes away (their next \
                 owner may read again what this member read since its last commit): {e}"
            ),
        }
    }

    /// `offsets` were committed: the group's commit of those partitions is this member's from
    /// now on (see `superseded`). Called only once a commit succeeded: after a failed one the
    /// group still holds the commit the restored checkpoint went back behind.
    fn committed(&self, offsets: &TopicPartitionList) {
        let mut superseded = self.superseded.lock().unwrap_or_else(|p| p.into_inner());
        for e in offsets.elements_for_topic(&self.topic) {
            superseded.remove(&e.partition());
        }
    }

    /// Sets where `tpl`'s partitions of this topic start (see the type's doc).
    fn place(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let mut restore_at = self.restore_at.lock().unwrap_or_else(|p| p.into_inner());
        let read_to = self.read_to.lock().unwrap_or_else(|p| p.into_inner());
        let assigned: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let mut starts = Positions::new();
        let mut ours = TopicPartitionList::new();
        let mut restored = TopicPartitionList::new();
        for partition in assigned {
            if let Some(offset) = restore_at.remove(&partition) {
                starts.insert(partition, offset);
                restored.add_partition(&self.topic, partition);
            } else if let Some(&offset) = read_to.get(&partition) {
                starts.insert(partition, offset);
                ours.add_partition(&self.topic, partition);
            }
        }
        let mut superseded = self.superseded.lock().unwrap_or_else(|p| p.into_inner());
        if restored.count() > 0 {
            if let Ok(committed) = consumer.committed_offsets(restored, self.timeout) {
                for e in committed.elements_for_topic(&self.topic) {
                    match (e.offset(), starts.get(&e.partition())) {
                        (Offset::Offset(c), Some(&start)) if c > start => {
                            superseded.insert(e.partition(), c);
                        }
                        _ => {
                            superseded.remove(&e.partition());
                        }
                    }
                }
            }
        }
        if ours.count() > 0 {
            let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
            for e in ours.elements_for_topic(&self.topic) {
                floors.remove(&e.partition());
            }
            // Another member may have read further since this one held the partition.
            if let Ok(committed) = consumer.committed_offsets(ours, self.timeout) {
                for e in committed.elements_for_topic(&self.topic) {
                    let partition = e.partition();
                    let Offset::Offset(c) = e.offset() else {
                        continue;
                    };
                    if superseded.get(&partition) == Some(&c) {
                        continue;
                    }
                    superseded.remove(&partition);
                    if let Some(start) = starts.get_mut(&partition) {
                        *start = (*start).max(c);
                        floors.insert(partition, (c, false));
                    }
                }
            }
        }
        for (partition, offset) in starts {
            let _ = tpl.set_partition_offset(&self.topic, partition, Offset::Offset(offset));
        }
    }

    /// The offset to commit for `partition` when the job is at `offset`: raised to what the
    /// group had committed when the partition came back to this member (see `floors`), while
    /// the job's position is below it. A floor goes once the job passes it, or when the log
    /// ends below it (truncated, or created again: that commit no longer stands, and the job
    /// reads on from where the log restarts); the broker is asked that once per floor.
    fn committable(&self, consumer: &BaseConsumer<Self>, partition: i32, offset: i64) -> i64 {
        let floor = {
            let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
            match floors.get(&partition) {
                None => return offset,
                Some(&(floor, _)) if offset >= floor => {
                    floors.remove(&partition);
                    return offset;
                }
                Some(&(floor, true)) => return floor,
                Some(&(floor, false)) => floor,
            }
        };
        let reached = match consumer.fetch_watermarks(&self.topic, partition, self.timeout) {
            Ok((_, high)) => high >= floor,
            // Unknown: keep the floor (at worst a stretch is read twice), and ask again next time.
            Err(_) => return floor,
        };
        let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        if reached {
            floors.insert(partition, (floor, true));
            floor
        } else {
            floors.remove(&partition);
            offset
        }
    }
}

impl ClientContext for PositionsContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(error, reason);
    }
}

/// librdkafka's own log lines: at debug level. What matters to a user (a broker unreachable, a
/// commit or a delivery failing) reaches the code that asked, which reports it once, in words.
fn client_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    tracing::debug!(target: "librdkafka", "{level:?} {fac}: {message}");
    if (level as i32) <= RDKafkaLogLevel::Error as i32 {
        remember_client_error(message);
    }
}

/// The latest connection-level error librdkafka reported (any client), and when: named in
/// "broker not reachable" errors, which otherwise only say "transport failure".
static LAST_CLIENT_ERROR: Mutex<Option<(Instant, String)>> = Mutex::new(None);

fn remember_client_error(reason: &str) {
    if let Ok(mut last) = LAST_CLIENT_ERROR.lock() {
        // "1/1 brokers are down" follows the reason why; keep the reason.
        let summary = reason.contains("brokers are down");
        if summary
            && last
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() < Duration::from_secs(30))
        {
            return;
        }
        *last = Some((Instant::now(), reason.to_string()));
    }
}

/// librdkafka's client-wide errors (brokers down, transport failures): at debug level, for the
/// same reason as [`client_log`]; polls and flushes return them to their callers.
fn client_error(error: KafkaError, reason: &str) {
    tracing::debug!(target: "librdkafka", "{error}: {reason}");
    remember_client_error(reason);
}

/// A client context that only routes librdkafka's logs (metadata clients, readers).
#[derive(Default)]
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(error, reason);
    }
}

impl ConsumerContext for QuietContext {}

/// Warns about transient consumer errors at most every [`TRANSIENT_WARNING_INTERVAL`],
/// counting the ones it holds back (an outage produces many per second).
#[derive(Default)]
struct TransientWarnings {
    last: Option<Instant>,
    held_back: u64,
}

const TRANSIENT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

impl TransientWarnings {
    fn warn(&mut self, topic: &str, e: &KafkaError) {
        match self.last {
            Some(last) if last.elapsed() < TRANSIENT_WARNING_INTERVAL => self.held_back += 1,
            _ => {
                let more = std::mem::take(&mut self.held_back);
                if more > 0 {
                    tracing::warn!(
                        topic,
                        "consumer error (retrying; {more} more in the last {} s): {e}",
                        TRANSIENT_WARNING_INTERVAL.as_secs()
                    );
                } else {
                    tracing::warn!(topic, "consumer error (retrying): {e}");
                }
                self.last = Some(Instant::now());
            }
        }
    }
}

impl ConsumerContext for PositionsContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.place(consumer, tpl);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Lost (the session timed out): another member may own them already, and a
                // commit of this generation would fail.
                if !consumer.assignment_lost() {
                    self.commit_before_revoke(consumer, tpl);
                }
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            _ => consumer.unassign(),
        };
        match result {
            Ok(()) => self.assigned.store(true, Ordering::Release),
            Err(e) => {
                tracing::warn!(topic = %self.topic, "applying a group rebalance failed: {e}")
            }
        }
    }
}

/// A consumer that is dropped on a thread of its own when nothing waits on its close.
///
/// rdkafka's drop closes a consumer that has a `group.id` (librdkafka needs one to assign
/// partitions) and polls it 100 ms at a time until it is closed; a consumer that only assigned
/// partitions gets no event that ends such a poll, so its drop takes 100 ms. Every bounded
/// read (`execute`, a schema sampled from a topic, a count) ended 100 ms after its last record.
/// Not in the background:
/// - a consumer that joined a group: it leaves the group where it is dropped, so that the
///   group can give its partitions to another member at once;
/// - a consumer of a TLS or SASL connection: a process may exit while a close runs, and the
///   TLS library's exit-time cleanup must not run under librdkafka threads still using it.
pub(crate) struct OwnedConsumer<C: ConsumerContext + 'static> {
    inner: Option<BaseConsumer<C>>,
    in_background: bool,
}

impl<C: ConsumerContext + 'static> OwnedConsumer<C> {
    pub(crate) fn new(consumer: BaseConsumer<C>, in_background: bool) -> Self {
        Self {
            inner: Some(consumer),
            in_background,
        }
    }

    /// Lets the consumer go now (on a thread of its own when `in_background`); it must not be
    /// used after.
    fn release(&mut self) {
        let Some(consumer) = self.inner.take() else {
            return;
        };
        if !self.in_background {
            return drop(consumer);
        }
        // If no thread can be started, the closure and the consumer are dropped here.
        let _ = std::thread::Builder::new()
            .name("velo-consumer-close".into())
            .spawn(move || drop(consumer));
    }
}

impl<C: ConsumerContext + 'static> std::ops::Deref for OwnedConsumer<C> {
    type Target = BaseConsumer<C>;
    fn deref(&self) -> &BaseConsumer<C> {
        self.inner
            .as_ref()
            .expect("a consumer is not used once released")
    }
}

impl<C: ConsumerContext + 'static> Drop for OwnedConsumer<C> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Reads records of one topic.
pub struct KafkaSource {
    /// Messages taken from `batches` and not yet handed out (a batch ended by its bytes).
    /// Dropped before `consumer` (fields drop in order).
    pending: Option<Taken>,
    /// The partitions' messages, taken in batches from a queue of their own (see `batch`).
    /// `None` only once the read is over and the consumer released. Dropped before `consumer`.
    batches: Option<BatchQueue>,
    /// Every assigned partition is to be forwarded to `batches` again (see `take_batch`).
    reforward: bool,
    /// The consumer's own queue gave a message last (not an event): see `take_batch`.
    consumer_messages: bool,
    /// When every assigned partition was last forwarded.
    last_forwarded: Instant,
    consumer: OwnedConsumer<PositionsContext>,
    topic: String,
    /// Whether records' headers are collected (see [`KafkaSource::without_headers`]).
    with_headers: bool,
    /// A batch closes once its payloads and keys hold this many bytes.
    max_batch_bytes: usize,
    /// A batch closes once nothing more is buffered (see [`KafkaSource::eager`]).
    eager: bool,
    collector: RecordBatchCollector,
    /// Snapshot mode: the end offset (exclusive) still to reach per partition.
    remaining: Option<BTreeMap<i32, i64>>,
    /// The next offset of each partition after the records handed out so far. A record
    /// before it (re-read after a rebalance rewound the partition to its committed offset) is
    /// skipped: the job has it already.
    delivered: Positions,
    /// Snapshot mode: the partitions that had records to read when the source opened.
    snapshot_partitions: Vec<i32>,
    /// Snapshot mode: the offset each chosen partition's snapshot ends at (exclusive).
    snapshot_ends: BTreeMap<i32, i64>,
    /// Snapshot mode: the offset each partition's read starts at.
    snapshot_starts: BTreeMap<i32, i64>,
    /// Group mode reading one assigned partition (`--partition` on `stream`).
    only_partition: Option<i32>,
    mode: ModeKind,
    timeout: Duration,
    transient: TransientWarnings,
    /// The position each partition was last checked against the broker's end offset at (see
    /// [`log_was_reset`]).
    checked_positions: Positions,
    /// Partitions whose positions were dropped since [`Source::take_reset_partitions`].
    reset: Vec<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModeKind {
    Snapshot,
    Group,
    Follow,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topic", &self.topic)
            .finish()
    }
}

impl KafkaSource {
    /// Opens `topic`: checks the broker answers and the topic exists, then assigns or subscribes.
    pub fn open(connection: &KafkaConnection, topic: &str, mode: ReadMode) -> Result<Self> {
        let mut config = connection.consumer_base();
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        let only_partition = match &mode {
            ReadMode::Group { partition, .. } => *partition,
            _ => None,
        };
        let kind = match &mode {
            ReadMode::Snapshot { .. } => ModeKind::Snapshot,
            ReadMode::Group { .. } => ModeKind::Group,
            ReadMode::Follow { .. } => ModeKind::Follow,
        };
        if kind == ModeKind::Snapshot {
            // A bounded read ends a partition at its end offset, or where the log ends first
            // for this reader: on a transactional topic the last offsets are commit markers no
            // message is delivered for (and uncommitted records are not readable).
            config.set("enable.partition.eof", "true");
        }
        match &mode {
            ReadMode::Snapshot { group_id, .. } => {
                config.set(
                    "group.id",
                    group_id
                        .clone()
                        .unwrap_or_else(|| "velo-sql-execute".into()),
                );
            }
            ReadMode::Follow { .. } => {
                config
                    .set("group.id", "velo-sql-follow")
                    .set("auto.offset.reset", "earliest");
            }
            ReadMode::Group {
                group_id,
                reset,
                instance_id,
                session_timeout,
                ..
            } => {
                if let Some(id) = instance_id {
                    config.set("group.instance.id", id);
                }
                if let Some(timeout) = session_timeout {
                    let ms = timeout.as_millis().max(1000);
                    config
                        .set("session.timeout.ms", ms.to_string())
                        .set("heartbeat.interval.ms", (ms / 3).min(3000).to_string());
                }
                config.set("group.id", group_id).set(
                    "auto.offset.reset",
                    if *reset == StartOffset::Latest {
                        "latest"
                    } else {
                        "earliest"
                    },
                );
            }
        }
        let context = PositionsContext {
            topic: topic.to_string(),
            restore_at: Mutex::new(Positions::new()),
            read_to: Mutex::new(Positions::new()),
            floors: Mutex::new(BTreeMap::new()),
            superseded: Mutex::new(BTreeMap::new()),
            assigned: AtomicBool::new(false),
            timeout: connection.timeout,
            before_revoke: Mutex::new(None),
        };
        let consumer: BaseConsumer<PositionsContext> = config
            .create_with_context(context)
            .map_err(|e| ConnectorError::kafka("creating a consumer", e))?;
        let partitions = connection.partitions(&consumer, topic)?;
        let mut snapshot_ends = BTreeMap::new();
        let mut snapshot_starts = BTreeMap::new();
        let remaining = match mode {
            ReadMode::Snapshot {
                start, partition, ..
            } => {
                let chosen: Vec<i32> = match partition {
                    Some(p) if !partitions.contains(&p) => {
                        return Err(ConnectorError::UnknownPartition {
                            topic: topic.to_string(),
                            partition: p,
                            count: partitions.len(),
                        })
                    }
                    Some(p) => vec![p],
                    None => partitions,
                };
                let mut assignment = TopicPartitionList::new();
                let mut remaining = BTreeMap::new();
                for p in chosen {
                    let (low, high) = consumer
                        .fetch_watermarks(topic, p, connection.timeout)
                        .map_err(|e| connection.unreachable(&e))?;
                    let from = match start {
                        StartOffset::Earliest => low,
                        StartOffset::Latest => high,
                        StartOffset::At(n) => n.max(low),
                    };
                    snapshot_ends.insert(p, high);
                    if from < high {
                        assignment
                            .add_partition_offset(topic, p, Offset::Offset(from))
                            .map_err(|e| ConnectorError::kafka("building the assignment", e))?;
                        remaining.insert(p, high);
                        snapshot_starts.insert(p, from);
                    }
                }
                if !remaining.is_empty() {
                    consumer.assign(&assignment).map_err(|e| {
                        ConnectorError::kafka(format!("assigning partitions of '{topic}'"), e)
                    })?;
                }
                Some(remaining)
            }
            ReadMode::Follow { from } => {
                let mut start = Positions::new();
                for p in partitions {
                    // A partition the table never read (added to the topic since it was
                    // loaded, or since the checkpoint it was restored from) is read from its
                    // start: its records are changes the table has not seen.
                    let offset = match from.get(&p) {
                        Some(&offset) => offset,
                        None => {
                            consumer
                                .fetch_watermarks(topic, p, connection.timeout)
                                .map_err(|e| connection.unreachable(&e))?
                                .0
                        }
                    };
                    start.insert(p, offset);
                }
                assign_at(&consumer, topic, &start)?;
                None
            }
            ReadMode::Group {
                partition: Some(p), ..
            } => {
                if !partitions.contains(&p) {
                    return Err(ConnectorError::UnknownPartition {
                        topic: topic.to_string(),
                        partition: p,
                        count: partitions.len(),
                    });
                }
                let mut assignment = TopicPartitionList::new();
                assignment
                    .add_partition_offset(topic, p, Offset::Stored)
                    .map_err(|e| ConnectorError::kafka("building the assignment", e))?;
                consumer.assign(&assignment).map_err(|e| {
                    ConnectorError::kafka(format!("assigning partition {p} of '{topic}'"), e)
                })?;
                None
            }
            ReadMode::Group { .. } => {
                consumer
                    .subscribe(&[topic])
                    .map_err(|e| ConnectorError::kafka(format!("subscribing to '{topic}'"), e))?;
                None
            }
        };
        let snapshot_partitions: Vec<i32> = remaining
            .as_ref()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default();
        let batches = BatchQueue::new(&consumer).ok_or_else(|| {
            ConnectorError::Config(format!("librdkafka gave no queue to read '{topic}' from"))
        })?;
        // Whatever is assigned already (a group's members get theirs later, and each change of
        // an assignment is forwarded again: `take_batch`).
        let mut reforward = false;
        match assigned_partitions(&consumer, topic) {
            Some(partitions) => batches.forward(&consumer, topic, partitions),
            None => reforward = true,
        }
        Ok(Self {
            pending: None,
            batches: Some(batches),
            reforward,
            consumer_messages: false,
            last_forwarded: Instant::now(),
            // Only a member of a group leaves it when closed.
            consumer: OwnedConsumer::new(
                consumer,
                kind != ModeKind::Group && connection.plaintext(),
            ),
            topic: topic.to_string(),
            with_headers: true,
            max_batch_bytes: crate::source::MAX_BATCH_BYTES,
            eager: false,
            collector: RecordBatchCollector::new(1024),
            snapshot_partitions,
            snapshot_ends,
            snapshot_starts,
            only_partition,
            remaining,
            delivered: Positions::new(),
            mode: kind,
            timeout: connection.timeout,
            transient: TransientWarnings::default(),
            checked_positions: Positions::new(),
            reset: Vec::new(),
        })
    }

    /// Records are collected without their headers (each row's `_headers` is empty): for
    /// readers that use neither the column nor the headers of bad records.
    pub fn without_headers(mut self) -> Self {
        self.with_headers = false;
        self
    }

    /// A batch closes once its payloads and keys hold `bytes` (64 MiB unless set): a batch holds
    /// at most that plus one record.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// A batch closes as soon as librdkafka has nothing more buffered for it, instead of waiting
    /// up to the poll's wait for more records: the wait then only bounds how long a batch waits
    /// for its first record (lower latency at low rates; under load, more and smaller batches,
    /// each flushed and committed: see docs/performance.md).
    pub fn eager(mut self) -> Self {
        self.eager = true;
        self
    }

    /// A snapshot of every partition of `topic` from its start to its end now.
    pub fn snapshot(connection: &KafkaConnection, topic: &str) -> Result<Self> {
        Self::open(
            connection,
            topic,
            ReadMode::Snapshot {
                start: StartOffset::Earliest,
                partition: None,
                group_id: None,
            },
        )
    }

    /// For a snapshot, the offset (exclusive) each partition's read ends at: where a
    /// [`ReadMode::Follow`] continuing it starts. Empty for other modes.
    pub fn snapshot_end_offsets(&self) -> &BTreeMap<i32, i64> {
        &self.snapshot_ends
    }

    fn exhausted(&self) -> bool {
        self.remaining.as_ref().is_some_and(|r| r.is_empty())
    }

    /// Group mode: each assigned partition's position (`read`) and end offset (`total`), asked
    /// of the broker; `None` when it does not answer.
    fn group_positions(&self) -> Option<Vec<crate::source::PartitionProgress>> {
        let positions = self.consumer.position().ok()?;
        let mut out = Vec::new();
        for element in positions.elements_for_topic(&self.topic) {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, element.partition(), Duration::from_secs(1))
                .ok()?;
            let position = match element.offset() {
                Offset::Offset(o) => o,
                // Nothing read yet: the whole partition is behind (from its low watermark).
                _ => low,
            };
            out.push(crate::source::PartitionProgress {
                partition: element.partition(),
                read: position,
                total: high,
            });
        }
        Some(out)
    }

    /// Lets the next assignment of the group start where this source has read to.
    fn publish_positions(&self) {
        if self.mode == ModeKind::Group && !self.delivered.is_empty() {
            let mut start_at = self
                .consumer
                .context()
                .read_to
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            start_at.extend(self.delivered.iter().map(|(&p, &o)| (p, o)));
        }
    }

    /// Whether the batch being collected takes more records.
    fn wants_more(&self, max_records: usize) -> bool {
        self.collector.len() < max_records
            && self.collector.bytes() < self.max_batch_bytes
            && !self.exhausted()
    }

    /// One round of [`Source::poll_batch`]. In order:
    /// 1. messages taken before and not handed out (a batch ended by its bytes): before any
    ///    event below, such as a revocation of their partition;
    /// 2. every assigned partition forwarded to `batches` again, when the assignment changed
    ///    (a rebalance, a `seek`), a message came through the consumer's queue, or 250 ms
    ///    passed since the last time (see [`KafkaSource::forward_assigned`]);
    /// 3. the consumer's own queue: its events (served by the `rdkafka` crate), and messages
    ///    fetched before their partition was forwarded. After 2, no later message of a
    ///    forwarded partition can come this way: serving this queue first reads each
    ///    partition in order;
    /// 4. what the forwarded partitions hold, waiting for it only while the batch is empty or
    ///    not eager, up to `deadline` or until the consumer's queue gets something.
    ///
    /// False when nothing more comes before the deadline.
    fn take_batch(&mut self, max_records: usize, deadline: Instant) -> Result<bool> {
        let mut taken = match self.pending.take() {
            Some(left) => left,
            None => {
                if self.batches.is_none() {
                    return Ok(false);
                }
                let rebalanced = self
                    .consumer
                    .context()
                    .assigned
                    .swap(false, Ordering::AcqRel);
                if self.reforward
                    || rebalanced
                    || (self.mode != ModeKind::Snapshot
                        && self.last_forwarded.elapsed() >= Duration::from_millis(250))
                {
                    self.forward_assigned();
                }
                let Some(batches) = self.batches.as_mut() else {
                    return Ok(false);
                };
                if batches.consumer_has_more() {
                    // Its events (a rebalance) are served between batches only: a revoke
                    // then finds every record read so far handed over, none held here for a
                    // partition that is no longer this member's. Messages that come this way
                    // (after an assignment) are taken into the batch one after another.
                    if !self.collector.is_empty() && !self.consumer_messages {
                        return Ok(false);
                    }
                    self.consumer_messages = false;
                    match self.consumer.poll(Duration::ZERO) {
                        // A message of a partition not forwarded (yet). Alive while the
                        // message is.
                        Some(Ok(message)) => {
                            self.reforward = true;
                            self.consumer_messages = true;
                            self.accept(unsafe { Consumed::from_ptr(message.ptr()) })?
                        }
                        Some(Err(e)) => self.accept_error(e)?,
                        // An event the crate served (a log, a rebalance), or an outdated op.
                        None => {}
                    }
                    return Ok(true);
                }
                let want = max_records - self.collector.len();
                let taken = batches.take(want, Duration::ZERO);
                if !taken.is_empty() {
                    taken
                } else if self.eager && !self.collector.is_empty() {
                    return Ok(false);
                } else if batches.consumer_has_more() {
                    // Came after the check above, and the take just now cleared its wake-up.
                    return Ok(true);
                } else {
                    let left = poll_wait(deadline.saturating_duration_since(Instant::now()));
                    if left.is_zero() {
                        return Ok(false);
                    }
                    // One message: librdkafka's batch call waits until it has all it may
                    // take, and the rest is taken without a wait in the next rounds.
                    let taken = batches.take(1, left);
                    if taken.is_empty() {
                        // Woken by the consumer's queue, or the wait is over.
                        return Ok(true);
                    }
                    taken
                }
            }
        };
        // Messages from the partitions' queue: the consumer's queue is drained no more.
        self.consumer_messages = false;
        while let Some(message) = taken.next() {
            self.accept(message)?;
            if !self.wants_more(max_records) {
                break;
            }
        }
        // A batch full by its bytes (or a read at its end) leaves the rest for the next.
        if !taken.is_empty() {
            self.pending = Some(taken);
        }
        Ok(true)
    }

    /// Forwards every partition assigned now to `batches`. librdkafka stops forwarding a
    /// partition when it stops fetching it (a revocation, an assignment again) and, once a
    /// partition was forwarded, keeps its next messages with the partition until it is
    /// forwarded again. So this runs after every change of the assignment, and every 250 ms
    /// besides: a stop librdkafka processes after the forwarding was renewed (it stops
    /// partitions asynchronously) would otherwise hold a partition's messages for good.
    fn forward_assigned(&mut self) {
        let Some(batches) = &self.batches else {
            return;
        };
        // On failure the flags stay, and the next round tries again.
        let Some(partitions) = assigned_partitions(&self.consumer, &self.topic) else {
            return;
        };
        batches.forward(&self.consumer, &self.topic, partitions);
        self.reforward = false;
        self.last_forwarded = Instant::now();
    }

    /// Adds a consumed message (or the error librdkafka delivered in its place) to the batch,
    /// unless it is past a bounded read's end or was handed out already.
    fn accept(&mut self, message: Consumed<'_>) -> Result<()> {
        if let Some(e) = message.error() {
            return self.accept_error(e);
        }
        let partition = message.partition();
        let offset = message.offset();
        if let Some(remaining) = self.remaining.as_mut() {
            match remaining.get(&partition) {
                Some(&end) if offset < end => {
                    if offset + 1 >= end {
                        remaining.remove(&partition);
                    }
                }
                // Past the snapshot's end, or a partition already finished.
                _ => {
                    remaining.remove(&partition);
                    return Ok(());
                }
            }
        }
        if self
            .delivered
            .get(&partition)
            .is_some_and(|&next| offset < next)
            && !log_was_reset(
                &self.consumer,
                &self.topic,
                self.timeout,
                partition,
                &mut self.delivered,
                &mut self.checked_positions,
                &mut self.reset,
            )
        {
            // Read again after the partition was reassigned from an older offset.
            return Ok(());
        }
        self.delivered.insert(partition, offset + 1);
        self.collector.push(
            message.payload(),
            message.key(),
            &self.topic,
            partition,
            offset,
            message.timestamp_ms(),
            // Parsing headers allocates per message: only when someone reads them.
            self.with_headers
                .then(|| message.headers())
                .into_iter()
                .flatten(),
        );
        Ok(())
    }

    /// An error librdkafka delivered while reading: the end of a partition, a fatal error (the
    /// read fails), or a transient one (warned about, the read goes on).
    fn accept_error(&mut self, e: KafkaError) -> Result<()> {
        match e {
            KafkaError::PartitionEOF(partition) => {
                if let Some(remaining) = self.remaining.as_mut() {
                    remaining.remove(&partition);
                }
                Ok(())
            }
            e if is_fatal(&e) => Err(ConnectorError::kafka(
                format!("reading '{}'", self.topic),
                e,
            )),
            e => {
                self.transient.warn(&self.topic, &e);
                Ok(())
            }
        }
    }
}

/// True when `partition` of `topic` now ends before `delivered`'s position for it: the topic
/// was deleted and created again, or truncated. Its records are then new, not read again, and
/// the position is forgotten (with a warning). Asks the broker once per partition and position
/// (`checked` remembers).
fn log_was_reset(
    consumer: &BaseConsumer<PositionsContext>,
    topic: &str,
    timeout: Duration,
    partition: i32,
    delivered: &mut Positions,
    checked: &mut Positions,
    reset: &mut Vec<i32>,
) -> bool {
    let Some(&position) = delivered.get(&partition) else {
        return false;
    };
    if checked.get(&partition) == Some(&position) {
        return false;
    }
    checked.insert(partition, position);
    let Ok((_, high)) = consumer.fetch_watermarks(topic, partition, timeout) else {
        return false;
    };
    if high >= position {
        return false;
    }
    tracing::warn!(
        "partition {partition} of '{topic}' ends at offset {high}, before offset {position} this \
         job had read to: the topic was created again or truncated; reading its records as new"
    );
    delivered.remove(&partition);
    reset.push(partition);
    let context = consumer.context();
    for positions in [&context.read_to, &context.restore_at] {
        positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&partition);
    }
    context
        .floors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&partition);
    context
        .superseded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&partition);
    true
}

/// The partitions of `topic` assigned to `consumer` now; `None` when librdkafka does not say.
fn assigned_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Option<Vec<i32>> {
    let assignment = consumer.assignment().ok()?;
    Some(
        assignment
            .elements_for_topic(topic)
            .iter()
            .map(|e| e.partition())
            .collect(),
    )
}

/// Assigns the partitions of `positions` to `consumer`, each at its offset.
fn assign_at<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    positions: &Positions,
) -> Result<()> {
    let mut assignment = TopicPartitionList::new();
    for (&p, &offset) in positions {
        assignment
            .add_partition_offset(topic, p, Offset::Offset(offset))
            .map_err(|e| ConnectorError::kafka("building the assignment", e))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| ConnectorError::kafka(format!("assigning partitions of '{topic}'"), e))
}

impl Source for KafkaSource {
    fn poll_batch(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Option<SourceBatch>> {
        if self.exhausted() {
            return Ok(None);
        }
        let deadline = Instant::now() + max_wait;
        self.consumer_messages = false;
        while self.wants_more(max_records) {
            if !self.take_batch(max_records, deadline)? {
                break;
            }
        }
        self.publish_positions();
        if self.exhausted() {
            // A bounded read needs its consumer no more (nothing after this touches it): its
            // close runs while the job finishes. Its messages and queues go first.
            self.pending = None;
            self.batches = None;
            self.consumer.release();
            if self.collector.is_empty() {
                return Ok(None);
            }
        }
        Ok(Some(self.collector.finish()))
    }

    fn seek(&mut self, positions: &Positions) -> Result<()> {
        // An assignment again stops the forwarding of its partitions.
        self.reforward = true;
        match self.mode {
            ModeKind::Snapshot if !positions.is_empty() => Err(ConnectorError::Config(format!(
                "a bounded read of '{}' cannot start at checkpoint offsets",
                self.topic
            ))),
            ModeKind::Snapshot => Ok(()),
            ModeKind::Group => {
                // A partition that now ends before its position was created again or
                // truncated: its records are new, read from its start.
                let mut kept = Positions::new();
                for (&partition, &position) in positions {
                    match self
                        .consumer
                        .fetch_watermarks(&self.topic, partition, self.timeout)
                    {
                        Ok((_, high)) if high < position => {
                            tracing::warn!(
                                "partition {partition} of '{}' ends at offset {high}, before \
                                 offset {position} the checkpoint had read to: the topic was \
                                 created again or truncated; reading its records as new",
                                self.topic
                            );
                            self.reset.push(partition);
                        }
                        _ => {
                            kept.insert(partition, position);
                        }
                    }
                }
                if let Some(p) = self.only_partition {
                    // Assigned, not subscribed: no rebalance will apply the positions.
                    let mut assignment = TopicPartitionList::new();
                    let offset = kept.get(&p).map_or(Offset::Stored, |&o| Offset::Offset(o));
                    assignment
                        .add_partition_offset(&self.topic, p, offset)
                        .map_err(|e| ConnectorError::kafka("building the assignment", e))?;
                    self.consumer.assign(&assignment).map_err(|e| {
                        ConnectorError::kafka(format!("assigning partition {p}"), e)
                    })?;
                }
                *self
                    .consumer
                    .context()
                    .restore_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = kept.clone();
                self.delivered = kept;
                self.publish_positions();
                Ok(())
            }
            ModeKind::Follow => {
                self.delivered = positions.clone();
                let mut start = match self.consumer.assignment() {
                    Ok(tpl) => tpl
                        .elements_for_topic(&self.topic)
                        .iter()
                        .filter_map(|e| match e.offset() {
                            Offset::Offset(o) => Some((e.partition(), o)),
                            _ => None,
                        })
                        .collect(),
                    Err(_) => Positions::new(),
                };
                start.extend(positions.iter().map(|(&p, &o)| (p, o)));
                assign_at(&self.consumer, &self.topic, &start)
            }
        }
    }

    fn commit(&mut self, positions: &Positions) -> Result<()> {
        if self.mode != ModeKind::Group || positions.is_empty() {
            return Ok(());
        }
        // Only the partitions this member owns now: another member's would be rewound.
        let assigned: Vec<i32> = self
            .consumer
            .assignment()
            .map(|tpl| {
                tpl.elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect()
            })
            .unwrap_or_default();
        let mut offsets = TopicPartitionList::new();
        let context = self.consumer.context();
        for (&partition, &offset) in positions {
            if assigned.contains(&partition) {
                let offset = context.committable(&self.consumer, partition, offset);
                offsets
                    .add_partition_offset(&self.topic, partition, Offset::Offset(offset))
                    .map_err(|e| ConnectorError::kafka("building the commit", e))?;
            }
        }
        if offsets.count() == 0 {
            return Ok(());
        }
        self.consumer
            .commit(&offsets, CommitMode::Sync)
            .map_err(|e| {
                ConnectorError::kafka(format!("committing offsets of '{}'", self.topic), e)
            })?;
        context.committed(&offsets);
        Ok(())
    }

    fn take_reset_partitions(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.reset)
    }

    fn describe(&self) -> String {
        format!("kafka topic '{}'", self.topic)
    }

    fn is_bounded(&self) -> bool {
        self.remaining.is_some()
    }

    /// Follow mode only (a table's topic): each assigned partition's high watermark.
    fn end_offsets(&self) -> Option<Positions> {
        if self.mode != ModeKind::Follow {
            return None;
        }
        let assignment = self.consumer.assignment().ok()?;
        let mut ends = Positions::new();
        for element in assignment.elements_for_topic(&self.topic) {
            let partition = element.partition();
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.topic, partition, self.timeout)
                .ok()?;
            ends.insert(partition, high);
        }
        Some(ends)
    }

    /// For a consumer group: per assigned partition, the high watermark minus the position
    /// (the next offset to read), summed.
    fn lag(&self) -> Option<i64> {
        if let Some(remaining) = &self.remaining {
            // A bounded read: what is left up to the end offsets it reads to.
            return Some(
                remaining
                    .iter()
                    .map(|(p, end)| {
                        let next = self
                            .delivered
                            .get(p)
                            .or_else(|| self.snapshot_starts.get(p))
                            .copied()
                            .unwrap_or(*end);
                        (end - next).max(0)
                    })
                    .sum(),
            );
        }
        if self.mode != ModeKind::Group {
            return None;
        }
        let partitions = self.group_positions()?;
        Some(partitions.iter().map(|p| (p.total - p.read).max(0)).sum())
    }

    fn partition_progress(&self) -> Vec<crate::source::PartitionProgress> {
        let Some(remaining) = &self.remaining else {
            return match self.mode {
                ModeKind::Group => self.group_positions().unwrap_or_default(),
                _ => Vec::new(),
            };
        };
        self.snapshot_starts
            .iter()
            .map(|(&partition, &start)| {
                let end = self.snapshot_ends.get(&partition).copied().unwrap_or(start);
                let next = match remaining.contains_key(&partition) {
                    true => self.delivered.get(&partition).copied().unwrap_or(start),
                    false => end,
                };
                crate::source::PartitionProgress {
                    partition,
                    read: (next - start).clamp(0, end - start),
                    total: end - start,
                }
            })
            .collect()
    }

    fn before_revoke(&mut self, hook: RevokeHook) {
        *self
            .consumer
            .context()
            .before_revoke
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    fn assigned_partitions(&self) -> Option<Vec<i32>> {
        match &self.remaining {
            Some(_) => Some(self.snapshot_partitions.clone()),
            None => self.consumer.assignment().ok().map(|tpl| {
                tpl.elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect()
            }),
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        if self.mode == ModeKind::Group {
            // Leave the group promptly so a restarted job gets the partitions at once.
            self.consumer.unsubscribe();
            let _ = self
                .consumer
                .poll(Duration::from_millis(0).min(self.timeout));
        }
    }
}

fn is_fatal(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition)
            | Some(RDKafkaErrorCode::TopicAuthorizationFailed)
            | Some(RDKafkaErrorCode::GroupAuthorizationFailed)
            | Some(RDKafkaErrorCode::Fatal)
    )
}

/// `left` in whole milliseconds, rounded down: the wait to give an `rdkafka` poll. librdkafka
/// waits in whole milliseconds, and the `rdkafka` crate polls again, with a zero wait, for what
/// is left of a fraction until it has passed — a spin of up to a millisecond per poll. Below a
/// millisecond this is zero: the caller stops waiting, or sleeps.
pub fn poll_wait(left: Duration) -> Duration {
    Duration::from_millis(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
}

/// Collects delivery failures reported by librdkafka, and counts every delivery report.
#[derive(Default)]
pub struct DeliveryTracker {
    failures: Mutex<(usize, Option<String>)>,
    reports: std::sync::atomic::AtomicU64,
}

impl ClientContext for DeliveryTracker {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(error, reason);
    }
}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        self.reports
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Err((e, _)) = result {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            failures.0 += 1;
            failures.1.get_or_insert_with(|| e.to_string());
        }
    }
}

/// A producer that sends messages and, on [`KafkaProducer::flush`], waits until the broker has
/// acknowledged every one of them (or reports which failed).
pub struct KafkaProducer {
    /// Started by the first send that cannot wait for the linger; declared first so that its
    /// thread has stopped before the producer is dropped.
    sender: Option<Sender>,
    /// The sending thread could not be started (not tried again).
    no_sender: bool,
    producer: Arc<BaseProducer<DeliveryTracker>>,
    timeout: Duration,
    tracker_topic: String,
    /// Messages queued since the last [`KafkaProducer::send_queued`].
    queued: usize,
    /// Messages [`KafkaProducer::send_queued`] left to the linger, behind unacknowledged ones.
    held: usize,
    /// When the sending thread was last asked, and the delivery reports served by then.
    requested: Option<(Instant, u64)>,
    /// The producer's `linger.ms`.
    linger: Duration,
}

/// A send asked of the [`Sender`] is asked again when no delivery report has come this long
/// after it while messages are outstanding, if the producer's linger is longer still (its
/// window can miss messages whose partition was not known yet, or a broker thread not
/// scheduled in time; with a shorter linger the linger sends them first). Long enough not to
/// fire because a busy broker is slow to acknowledge.
const RESEND_AFTER: Duration = Duration::from_millis(50);

/// How long the [`Sender`]'s flush lasts: while it does, librdkafka sends what is queued
/// without waiting out `linger.ms`.
const SEND_WINDOW_MS: i32 = 1;

/// A thread of the producer's own that sends what the job has handed over, without the job
/// waiting: librdkafka skips `linger.ms` only while a flush call lasts, and a flush without a
/// wait returns before its broker thread has looked (the output then waits the whole linger);
/// a flush with a wait, made by the job, blocks it for that wait on every micro-batch (with the
/// event API a message counts until the job serves its delivery report). Requests made while
/// one flush runs are folded into the next.
struct Sender {
    wanted: Arc<(Mutex<SenderState>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct SenderState {
    pending: bool,
    stop: bool,
}

impl Sender {
    fn start(producer: Arc<BaseProducer<DeliveryTracker>>) -> std::io::Result<Self> {
        let wanted = Arc::new((
            Mutex::new(SenderState::default()),
            std::sync::Condvar::new(),
        ));
        let shared = wanted.clone();
        let thread = std::thread::Builder::new()
            .name("velo-producer-send".into())
            .spawn(move || {
                let (state, wake) = &*shared;
                loop {
                    {
                        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                        while !s.pending && !s.stop {
                            s = wake.wait(s).unwrap_or_else(|p| p.into_inner());
                        }
                        if s.stop {
                            return;
                        }
                        s.pending = false;
                    }
                    // SAFETY: the pointer is the live producer this thread holds an `Arc` of;
                    // librdkafka's flush may be called from any thread. It only waits (the
                    // delivery reports stay queued for the job to serve).
                    unsafe {
                        rdkafka::bindings::rd_kafka_flush(
                            producer.client().native_ptr(),
                            SEND_WINDOW_MS,
                        );
                    }
                }
            })?;
        Ok(Self {
            wanted,
            thread: Some(thread),
        })
    }

    fn request(&self) {
        let (state, wake) = &*self.wanted;
        state.lock().unwrap_or_else(|p| p.into_inner()).pending = true;
        wake.notify_one();
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let (state, wake) = &*self.wanted;
        state.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl KafkaProducer {
    /// A producer for `connection` (idempotent, acks=all).
    pub fn new(connection: &KafkaConnection) -> Result<Self> {
        let mut config = connection.client_config(
            Role::Producer,
            &[
                ("linger.ms", "5".to_string()),
                (
                    "message.timeout.ms",
                    connection.timeout.as_millis().max(1000).to_string(),
                ),
            ],
        );
        // No loss, no duplicates on retries: not for configuration to undo.
        config.set("enable.idempotence", "true").set("acks", "all");
        let linger = config
            .get("linger.ms")
            .and_then(|ms| ms.trim().parse::<f64>().ok())
            .map_or(Duration::ZERO, |ms| {
                Duration::from_secs_f64(ms.max(0.0) / 1000.0)
            });
        let producer: BaseProducer<DeliveryTracker> = config
            .create_with_context(DeliveryTracker::default())
            .map_err(|e| ConnectorError::kafka("creating a producer", e))?;
        Ok(Self {
            producer: Arc::new(producer),
            timeout: connection.timeout,
            tracker_topic: String::new(),
            sender: None,
            no_sender: false,
            queued: 0,
            held: 0,
            requested: None,
            linger,
        })
    }

    /// Queues one message; waits for room when librdkafka's queue is full.
    pub fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        if self.tracker_topic != topic {
            self.tracker_topic = topic.to_string();
        }
        let mut nap = Nap::default();
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.queued += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    // Room comes back as delivery reports are served.
                    self.await_reports(&mut nap);
                }
                Err((e, _)) => {
                    return Err(ConnectorError::kafka(format!("producing to '{topic}'"), e))
                }
            }
        }
    }

    /// Sends what is queued without waiting for acknowledgements: true when every message
    /// produced so far is acknowledged; fails if one was refused.
    ///
    /// Like Nagle's algorithm the other way round: what was queued since the last call is sent
    /// at once when nothing sent before is still unacknowledged (the latency of a trickle), and
    /// otherwise left to `linger.ms` to gather with what follows (fewer, larger requests for a
    /// broker that is busy answering the earlier ones).
    ///
    /// A send asked for is asked again when no delivery report followed it within
    /// [`RESEND_AFTER`], so calling this while waiting (the job does, between micro-batches)
    /// never leaves messages to a long linger.
    pub fn send_queued(&mut self) -> Result<bool> {
        self.serve_reports();
        self.held += std::mem::take(&mut self.queued);
        let in_flight = usize::try_from(self.producer.in_flight_count()).unwrap_or(0);
        // Held messages the linger has since sent and the broker acknowledged are gone.
        self.held = self.held.min(in_flight);
        let only_ours = self.held > 0 && in_flight <= self.held;
        let reports = self.reports();
        let missed = in_flight > 0
            && self.linger > RESEND_AFTER
            && self
                .requested
                .is_some_and(|(at, seen)| at.elapsed() >= RESEND_AFTER && reports == seen);
        if only_ours || missed {
            self.send_now();
        }
        self.take_failures()?;
        Ok(in_flight == 0)
    }

    /// Delivery reports served so far.
    fn reports(&self) -> u64 {
        self.producer
            .context()
            .reports
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Serves every delivery report that has come (one poll without a wait serves one event).
    fn serve_reports(&self) {
        loop {
            let before = self.producer.in_flight_count();
            self.producer.poll(Duration::ZERO);
            if self.producer.in_flight_count() >= before {
                return;
            }
        }
    }

    /// Has what waits for `linger.ms` sent at once, by the producer's own thread.
    fn send_now(&mut self) {
        self.held = 0;
        self.requested = Some((Instant::now(), self.reports()));
        if self.sender.is_none() && !self.no_sender {
            match Sender::start(self.producer.clone()) {
                Ok(sender) => self.sender = Some(sender),
                Err(e) => {
                    tracing::warn!("cannot start the producer's sending thread: {e}");
                    self.no_sender = true;
                }
            }
        }
        match &self.sender {
            Some(sender) => sender.request(),
            // Without the thread, a flush without a wait does what it can.
            None => {
                let _ = self.producer.flush(Duration::ZERO);
            }
        }
    }

    /// The deliveries that failed since the last call, as an error.
    fn take_failures(&mut self) -> Result<()> {
        let mut failures = self
            .producer
            .context()
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failures.0 > 0 {
            let failed = std::mem::take(&mut failures.0);
            let first_error = failures.1.take().unwrap_or_default();
            return Err(ConnectorError::Delivery {
                topic: self.tracker_topic.clone(),
                failed,
                first_error,
            });
        }
        Ok(())
    }

    /// Waits until every queued message is acknowledged; fails if any was not.
    pub fn flush(&mut self) -> Result<()> {
        self.serve_reports();
        self.queued = 0;
        if let Err(e) = self.flush_promptly() {
            return Err(ConnectorError::Delivery {
                topic: self.tracker_topic.clone(),
                failed: self.producer.in_flight_count().max(1) as usize,
                first_error: e.to_string(),
            });
        }
        self.take_failures()
    }

    /// Waits until every message is acknowledged, up to the connection's timeout, keeping the
    /// sending thread flushing meanwhile (a message whose partition was not known yet, at the
    /// first flush, is queued for `linger.ms` once it is). Not `BaseProducer::flush`: rdkafka
    /// 0.39 polls there 100 ms at a time and its poll waits out the whole interval even when
    /// the acknowledgement came first, so every flush (one per micro-batch) took at least
    /// 100 ms.
    fn flush_promptly(&mut self) -> rdkafka::error::KafkaResult<()> {
        let deadline = Instant::now() + self.timeout;
        let mut nap = Nap::default();
        self.serve_reports();
        loop {
            if self.producer.in_flight_count() == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
            }
            self.send_now();
            // Serves what came during the last nap: the nap starts short again.
            self.await_reports(&mut nap);
        }
    }

    /// Serves the delivery reports that have come, or, if none has, sleeps for `nap` (which
    /// then grows; it starts again short once a report came).
    ///
    /// Sleeps rather than polls with a wait: rdkafka 0.39's `BaseProducer::poll` lasts its
    /// whole wait and spins through its last millisecond (what is left rounds down to a
    /// librdkafka poll of 0 ms), so a `poll(1 ms)` in a loop kept a core busy for as long as
    /// acknowledgements took. A blocking flush of every micro-batch cost a non-eager job
    /// writing to a topic a busy core.
    fn await_reports(&self, nap: &mut Nap) {
        let before = self.reports();
        self.serve_reports();
        if self.reports() == before {
            nap.sleep();
        } else {
            *nap = Nap::default();
        }
    }
}

/// The growing sleeps of a wait for delivery reports ([`KafkaProducer::await_reports`]): from
/// 50 µs, doubling up to 1 ms, so that an acknowledgement is seen within a fraction of the
/// broker's round trip and a long wait costs about a thousand wake-ups a second.
struct Nap(Duration);

impl Default for Nap {
    fn default() -> Self {
        Self(Duration::from_micros(50))
    }
}

impl Nap {
    fn sleep(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(1));
    }
}

/// What a job does when a dead letter cannot be written (too large for the broker, the topic
/// unwritable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeadLetterFailure {
    /// Report it (log, count) and go on: the record is lost to the dead-letter topic, the job
    /// is not.
    #[default]
    Log,
    /// Fail the job.
    Fail,
}

impl std::str::FromStr for DeadLetterFailure {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "log" => Ok(Self::Log),
            "fail" => Ok(Self::Fail),
            other => Err(format!("unknown dead-letter policy '{other}' (log, fail)")),
        }
    }
}

/// The longest reason a dead letter carries in its `velo.error` header (an error message may
/// quote the record; the record itself is the payload).
pub const MAX_REASON_BYTES: usize = 1024;

/// `reason` cut to [`MAX_REASON_BYTES`] at a character boundary, marked when cut.
pub fn bounded_reason(reason: &str) -> std::borrow::Cow<'_, str> {
    if reason.len() <= MAX_REASON_BYTES {
        return std::borrow::Cow::Borrowed(reason);
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}… ({} bytes cut)",
        &reason[..end],
        reason.len() - end
    ))
}

/// Writes records that could not be processed, unchanged, to a dead-letter topic. Each keeps its
/// key and headers and gains `velo.error` (the reason, at most [`MAX_REASON_BYTES`]) and
/// `velo.source.topic`, `velo.source.partition`, `velo.source.offset` headers. A dead letter
/// that cannot be written is reported and, by default, the job goes on
/// ([`DeadLetterFailure`]).
pub struct DeadLetterQueue {
    producer: KafkaProducer,
    topic: String,
    on_failure: DeadLetterFailure,
    /// Dead letters that could not be written.
    pub lost: u64,
}

impl DeadLetterQueue {
    /// Header holding the reason a record was dead-lettered.
    pub const REASON_HEADER: &'static str = "velo.error";

    /// A dead-letter queue writing to `topic`.
    pub fn new(connection: &KafkaConnection, topic: impl Into<String>) -> Result<Self> {
        Ok(Self {
            producer: KafkaProducer::new(connection)?,
            topic: topic.into(),
            on_failure: DeadLetterFailure::default(),
            lost: 0,
        })
    }

    /// What to do when a dead letter cannot be written.
    pub fn on_failure(mut self, policy: DeadLetterFailure) -> Self {
        self.on_failure = policy;
        self
    }

    /// Applies the policy to a failed write of `what`.
    fn failed(&mut self, what: &str, e: ConnectorError) -> Result<()> {
        match self.on_failure {
            DeadLetterFailure::Fail => Err(e),
            DeadLetterFailure::Log => {
                self.lost += 1;
                tracing::error!(
                    "{what} could not be written to the dead-letter topic '{}' and is lost to it \
                     (the job goes on; dlq.on_error = fail stops it instead): {e}",
                    self.topic
                );
                Ok(())
            }
        }
    }

    /// Queues one failed record.
    pub fn send(
        &mut self,
        payload: Option<&[u8]>,
        key: Option<&[u8]>,
        original_headers: &[(String, Option<String>)],
        position: &RecordPosition,
        reason: &str,
    ) -> Result<()> {
        let mut headers = OwnedHeaders::new_with_capacity(original_headers.len() + 4);
        for (name, value) in original_headers {
            headers = headers.insert(Header {
                key: name,
                value: value.as_deref(),
            });
        }
        let partition = position.partition.to_string();
        let offset = position.offset.to_string();
        let reason = bounded_reason(reason);
        headers = headers
            .insert(Header {
                key: Self::REASON_HEADER,
                value: Some(reason.as_ref()),
            })
            .insert(Header {
                key: "velo.source.topic",
                value: Some(position.topic.as_str()),
            })
            .insert(Header {
                key: "velo.source.partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "velo.source.offset",
                value: Some(offset.as_str()),
            });
        let topic = self.topic.clone();
        match self
            .producer
            .send(&topic, key, payload.unwrap_or_default(), Some(headers))
        {
            Ok(()) => Ok(()),
            Err(e) => self.failed(&format!("the bad record at {position}"), e),
        }
    }

    /// Queues a result row the sink could not encode: the row as JSON, with the `velo.error`
    /// and `velo.sink.topic` headers.
    pub fn send_rejected(&mut self, row: &[u8], reason: &str, sink_topic: &str) -> Result<()> {
        self.send_row(
            row,
            reason,
            &[("velo.sink.topic", sink_topic)],
            &format!("a result row for '{sink_topic}'"),
        )
    }

    /// Dead-letters a row that has no record of its own (a result row, a row computed inside
    /// the query), as a JSON object, with the reason and `context` headers.
    pub fn send_row(
        &mut self,
        row: &[u8],
        reason: &str,
        context: &[(&str, &str)],
        what: &str,
    ) -> Result<()> {
        let reason = bounded_reason(reason);
        let mut headers = OwnedHeaders::new_with_capacity(1 + context.len()).insert(Header {
            key: Self::REASON_HEADER,
            value: Some(reason.as_ref()),
        });
        for (key, value) in context {
            headers = headers.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let topic = self.topic.clone();
        match self.producer.send(&topic, None, row, Some(headers)) {
            Ok(()) => Ok(()),
            Err(e) => self.failed(what, e),
        }
    }

    /// Waits until every dead-lettered record is acknowledged.
    pub fn flush(&mut self) -> Result<()> {
        match self.producer.flush() {
            Ok(()) => Ok(()),
            Err(e) => self.failed("a dead letter", e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time of the calling thread (utime + stime from /proc, in clock ticks of 10 ms).
    fn thread_cpu() -> Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc is mounted");
        // The fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("a command name") + 2..]
            .split(' ')
            .collect();
        let ticks = |i: usize| fields[i].parse::<u64>().expect("a tick count");
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        Duration::from_millis((ticks(11) + ticks(12)) * 10)
    }

    #[test]
    fn only_plaintext_connections_close_bounded_readers_in_the_background() {
        let mut connection = KafkaConnection::new("127.0.0.1:9092", Duration::from_secs(1));
        assert!(connection.plaintext());
        connection
            .consumer_properties
            .push(("security.protocol".into(), "PLAINTEXT".into()));
        assert!(connection.plaintext());
        // The common properties are set last, so theirs is the one the client uses.
        connection
            .properties
            .push(("security.protocol".into(), "sasl_ssl".into()));
        assert!(!connection.plaintext());
        connection.properties.clear();
        connection.consumer_properties[0].1 = "ssl".into();
        assert!(!connection.plaintext());
    }

    #[test]
    fn a_flush_waiting_for_acknowledgements_sleeps_instead_of_spinning() {
        // Nothing listens on port 1: the message is never acknowledged, and the flush waits
        // for the connection's whole timeout.
        let connection = KafkaConnection::new("127.0.0.1:1", Duration::from_millis(1500));
        let mut producer = KafkaProducer::new(&connection).expect("a producer");
        producer.send("t", None, b"x", None).expect("queued");
        let (cpu, started) = (thread_cpu(), Instant::now());
        let flushed = producer.flush();
        let (cpu, waited) = (thread_cpu() - cpu, started.elapsed());
        assert!(flushed.is_err(), "nothing can acknowledge the message");
        assert!(waited >= Duration::from_millis(1400), "waited {waited:?}");
        // A poll-with-a-wait loop kept this thread busy for the whole wait (rdkafka 0.39's
        // `BaseProducer::poll` spins through its last millisecond).
        assert!(
            cpu < waited / 10,
            "the waiting thread used {cpu:?} of CPU in {waited:?}"
        );
    }

    #[test]
    fn a_missing_topic_names_the_topics_most_like_it_when_there_are_many() {
        let few: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(names_like("x", &few), "a, b");
        assert_eq!(names_like("x", &[]), "(none)");
        let many: Vec<String> = (0..50)
            .map(|i| format!("other-{i:02}"))
            .chain(["orders-eu".to_string(), "orders-us".to_string()])
            .collect();
        let named = names_like("orders", &many);
        assert!(named.starts_with("orders-eu, orders-us, other-"), "{named}");
        assert!(named.ends_with("… and 42 more"), "{named}");
    }
}
