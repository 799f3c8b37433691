//! One pipeline worker: owns the partitions `partition % workers == index`, their users and
//! their in-flight outputs, and stores their offsets once outputs are acknowledged. With a
//! state dir, it checkpoints in rounds with the other workers (`checkpoint_round`): a round
//! called by any worker is joined by each at its next turn.
//!
//! `select!` is biased: acknowledgements first (they free room and move offsets), then
//! coalescing ticks, then new messages — only while fewer than `max_in_flight` messages wait for
//! acknowledgement (backpressure that reaches the consumer through the bounded channel).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::changelog::{checkpoint_records, PartitionLog};
use super::checkpoint_round::{self, CheckpointRounds, Part, WriteTo};
use super::context::{GroupContext, NotSettled, Restored, WorkerInput};
use super::error::RunError;
use super::health::Health;
use super::latency::{wall_clock_ms, Latency};
use super::sink::{send, Acked, DeliveryError, InFlight, Topics};
use crate::admin::Metrics;
use crate::config::PipelineConfig;
use crate::dead_letter::{self, Refused};
use crate::engine::{UserCut, USERS_PER_STEP};
use crate::offsets::{topic_index, NextOffsets, OffsetTracker, PartitionKey, Waiter};
use crate::pipeline::{
    stream_of, Cleaned, Destination, Flushed, LoadError, Output, Processor, Ready, Record, Stats,
};
use crate::query::job::{error, Ask};
use crate::query::{answer, QueryJob, Routes};
use crate::runtime::checkpoint::Durable;
use crate::runtime::rounds::{Abandoned, Arrival};
use crate::store::{CheckpointSize, StateStore, StoreError};

const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Coalesced updates ranked per step of the loop (~0.5 ms): a query or an acknowledgement
/// waits for one step, not for a whole flush of thousands.
const FLUSH_STEP: usize = 32;

pub(super) struct Worker {
    pub index: usize,
    pub checkpoints: Option<Durable>,
    /// The checkpoint rounds of all workers, and this worker's view of their calls.
    pub rounds: Arc<CheckpointRounds>,
    pub called: watch::Receiver<u64>,
    pub consumer: Arc<StreamConsumer<GroupContext>>,
    pub producer: FutureProducer,
    pub topics: Arc<Topics>,
    pub inputs: Arc<Vec<String>>,
    pub processor: Processor,
    pub latency_us: Latency,
    pub metrics: Arc<Metrics>,
    /// Users this worker last added to the `users_in_memory` gauge.
    pub users_reported: i64,
    /// The counters as of the last rejection log, and when: bad input is logged as one line
    /// per reason per interval with a count, never a line per message.
    pub rejections_logged: Stats,
    pub last_rejection_log: Instant,
    /// One span per (input topic index, partition).
    pub partition_spans: BTreeMap<PartitionKey, tracing::Span>,
    /// One slot per worker, summed for progress reports.
    pub stats: Arc<Mutex<Vec<Stats>>>,
    /// With the query API: this worker's queries, answered between two inputs.
    pub queries: Option<mpsc::Receiver<QueryJob>>,
    pub routes: Option<Arc<Routes>>,
    /// Whether a keyed event has been checked against `query.partitioner` yet.
    pub partitioner_checked: bool,
}

struct State {
    tracker: OffsetTracker,
    in_flight: InFlight,
    /// Outputs their topic refused for what they are: dead letters take their place.
    refused: Vec<Refused>,
    /// Last offset per (topic index, partition) whose outputs are all acknowledged.
    acked_through: BTreeMap<PartitionKey, i64>,
    stored: BTreeMap<PartitionKey, i64>,
    /// A checkpoint being written on a blocking thread, and the offsets it covers.
    writing: Option<Writing>,
    /// Where this worker's users go once its part of a round's cut is complete (taken in
    /// steps between messages: `engine::capture`).
    capturing: Option<oneshot::Sender<UserCut>>,
    /// Coalesced updates are due beyond the last step's `FLUSH_STEP`.
    flush_owed: bool,
}

/// A checkpoint's cut is taken on the workers (a consistent state, cheap to take), then encoded
/// and written by sled on a blocking thread, so the workers only stop for the cut (and the
/// changelog's records of the changed users, when there is a changelog).
struct Writing {
    done: oneshot::Receiver<Result<CheckpointSize, RunError>>,
    /// This worker's positions in it.
    covers: NextOffsets,
    started: Instant,
}

/// Abandons the checkpoint rounds when dropped armed: a worker's stake in them while it works.
struct Member(Option<Arc<CheckpointRounds>>);

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(rounds) = &self.0 {
            rounds.abandon();
        }
    }
}

/// The next query (never, without the query API).
async fn next_query(queries: &mut Option<mpsc::Receiver<QueryJob>>) -> Option<QueryJob> {
    match queries {
        Some(queries) => queries.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the pending write finishes (never when there is none).
async fn written(writing: &mut Option<Writing>) -> Result<CheckpointSize, RunError> {
    match writing {
        Some(w) => (&mut w.done)
            .await
            .unwrap_or_else(|_| Err(Abandoned.into())),
        None => std::future::pending().await,
    }
}

impl Worker {
    /// Processes messages until the channel closes, then publishes what is owed and waits for
    /// acknowledgements. Returns the processor (its engine holds this worker's users).
    pub async fn run(
        self,
        messages: mpsc::Receiver<WorkerInput>,
        pipeline: PipelineConfig,
    ) -> Result<Processor, RunError> {
        // A worker that fails, or panics, abandons the rounds: the others must not wait for it.
        let mut member = Member(Some(self.rounds.clone()));
        let processor = self.work(messages, pipeline).await?;
        member.0 = None;
        Ok(processor)
    }

    async fn work(
        mut self,
        mut messages: mpsc::Receiver<WorkerInput>,
        pipeline: PipelineConfig,
    ) -> Result<Processor, RunError> {
        let mut state = State {
            tracker: OffsetTracker::default(),
            in_flight: InFlight::new(),
            refused: Vec::new(),
            acked_through: BTreeMap::new(),
            stored: BTreeMap::new(),
            writing: None,
            capturing: None,
            flush_owed: false,
        };
        let tick_ms = (pipeline.min_update_interval_ms / 4).clamp(10, 100);
        let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.step_cut(&mut state, USERS_PER_STEP);
            let room = state.tracker.open_events() < pipeline.max_in_flight;
            tokio::select! {
                biased;
                Some(acked) = state.in_flight.next() => self.on_acked(&mut state, acked)?,
                done = written(&mut state.writing) => self.on_written(&mut state, done)?,
                Some(job) = next_query(&mut self.queries) => self.on_query(job),
                Ok(()) = self.called.changed(), if self.checkpoints.is_some() => {
                    if self.rounds.is_open() {
                        self.join_round(&mut state).await?;
                    }
                }
                _ = tick.tick() => {
                    self.flush_step(&mut state).await?;
                    self.checkpoint_if_due(&mut state).await?;
                    self.publish_stats();
                    self.log_rejections(false);
                }
                // Before new input, as a whole flush was; after queries, which wait at most
                // one step.
                _ = std::future::ready(()), if state.flush_owed => self.flush_step(&mut state).await?,
                input = messages.recv(), if room => match input {
                    Some(WorkerInput::Message(message)) => {
                        let key = self.partition_key(&message)?;
                        let span = self.partition_span(key, &message);
                        self.on_message(&mut state, &message, key).instrument(span).await?
                    }
                    Some(WorkerInput::Listing(news)) => {
                        let processed = (self.processor).listing_changed(news.item, &news.change, news.updated_at_ms);
                        self.send_all(&mut state, processed.outputs).await?;
                    }
                    Some(WorkerInput::Restore(log, reply)) => {
                        let _ = reply.send(self.restore(&mut state, *log).await?);
                    }
                    Some(WorkerInput::Settle(reply)) => {
                        let settled = self.settle(&mut state, pipeline.drain_timeout_ms).await;
                        if let Err(err) = &settled {
                            tracing::warn!(error = %err, "cannot settle before the revoke");
                        }
                        let _ = reply.send(settled.as_ref().map(|_| ()).map_err(|_| NotSettled));
                        match settled {
                            // A revoke while the brokers are unreachable (the session expired
                            // in an outage): the outputs stay queued in the producer and their
                            // inputs uncommitted, so whoever owns the partitions next re-reads
                            // them. Not a reason to stop; at shutdown it is.
                            Err(RunError::DrainTimeout { open, drain_ms }) => tracing::warn!(
                                open,
                                drain_ms,
                                "outputs of revoked partitions not acknowledged in time; their inputs stay uncommitted"
                            ),
                            other => other?,
                        }
                    }
                    None => break,
                },
                // Idle with a cut under way: the loop's next step goes on with it.
                _ = std::future::ready(()), if state.capturing.is_some() => {}
            }
            if !state.refused.is_empty() {
                self.send_all(&mut state, Vec::new()).await?;
            }
            self.store_offsets(&mut state);
        }
        self.settle(&mut state, pipeline.drain_timeout_ms).await?;
        self.leave_rounds();
        self.publish_stats();
        self.log_rejections(true);
        Ok(self.processor)
    }

    /// Applies nothing more: later rounds go on without this worker (leading the open one
    /// when it waited only for this worker).
    fn leave_rounds(&mut self) {
        let Some((parts, release)) = self.rounds.leave() else {
            return;
        };
        let to = self.write_to();
        let engine = self.processor.engine();
        checkpoint_round::lead(engine, parts, release, to);
    }

    /// Publishes everything owed, waits for its acknowledgements, writes a checkpoint of all
    /// applied so far and stores the offsets it covers: at shutdown, and before a revoke.
    async fn settle(&mut self, state: &mut State, drain_ms: u64) -> Result<(), RunError> {
        self.drain(state, drain_ms).await?;
        self.wait_written(state).await?;
        // The drain's publications changed users too (what they were shown): written now,
        // while the partitions are still this worker's.
        let changed = self.processor.engine().users_changed_since_cut();
        if self
            .checkpoints
            .as_ref()
            .is_some_and(|c| c.checkpointer.pending() || changed)
        {
            self.checkpoint(state).await?;
            self.wait_written(state).await?;
        }
        self.store_offsets(state);
        Ok(())
    }

    /// The span a partition's messages are processed in (what is logged there names the
    /// partition), made once per partition.
    fn partition_span(&mut self, key: PartitionKey, message: &OwnedMessage) -> tracing::Span {
        let (topic, partition) = (message.topic(), message.partition());
        self.partition_spans
            .entry(key)
            .or_insert_with(|| tracing::info_span!("partition", topic, partition))
            .clone()
    }

    /// The message's partition among the consumed topics (looked up once per message).
    fn partition_key(&self, message: &OwnedMessage) -> Result<PartitionKey, RunError> {
        let topic = message.topic();
        let index = topic_index(&self.inputs, topic).ok_or_else(|| RunError::UnknownTopic {
            topic: topic.to_owned(),
        })?;
        Ok(PartitionKey::new(index, message.partition()))
    }

    /// Answers a query from this worker's state, putting a stored user back in memory first
    /// as their next event would. A user the store cannot give back is the caller's 500, not
    /// the worker's end: a query never stops ingestion (the user's next event would).
    fn on_query(&mut self, job: QueryJob) {
        if let (Ask::User(ask), Some(checkpoints)) = (&job.ask, &self.checkpoints) {
            let store = checkpoints.checkpointer.store();
            if let Err(err) = load_stored_user(&mut self.processor, store, &ask.user_id) {
                tracing::error!(error = %err, "a query's user cannot be read from the store");
                let detail = "the user's stored state cannot be read; see the instance's log";
                let _ = job.reply.send(error(500, "state_unreadable", detail));
                return;
            }
        }
        let exclude_seen = self.processor.exclude_seen();
        let reply = answer(
            self.processor.engine_mut(),
            &job.ask,
            exclude_seen,
            wall_clock_ms(),
        );
        let _ = job.reply.send(reply);
    }

    /// Warns once when the first keyed event's partition is not the one `query.partitioner`
    /// gives its key: user queries would then go to the wrong worker.
    fn check_partitioner(&mut self, message: &OwnedMessage, key: PartitionKey) {
        if self.partitioner_checked {
            return;
        }
        let Some(routes) = self.routes.as_ref().filter(|r| r.partitions() > 0) else {
            return;
        };
        let Some(user) = message.key().filter(|k| !k.is_empty() && key.topic == 0) else {
            return;
        };
        self.partitioner_checked = true;
        let expected = routes.partitioner().partition(user, routes.partitions());
        if expected != message.partition() {
            tracing::error!(
                topic = message.topic(),
                partition = message.partition(),
                expected,
                "query.partitioner does not place this event's key where its producer did: user queries would ask the wrong worker; set it to the producers' partitioner (librdkafka: consistent_random, Java: murmur2_random)"
            );
            self.metrics.query.partitioner_mismatches.inc();
        }
    }

    async fn on_message(
        &mut self,
        state: &mut State,
        message: &OwnedMessage,
        key: PartitionKey,
    ) -> Result<(), RunError> {
        self.check_partitioner(message, key);
        let topic = message.topic();
        let record = Record {
            source: Waiter {
                topic: key.topic,
                partition: key.partition,
                offset: message.offset(),
            },
            topic,
            key: message.key(),
            payload: message.payload(),
            timestamp_ms: message.timestamp().to_millis(),
        };
        let processed = match &self.checkpoints {
            None => self.processor.process(&record, wall_clock_ms()),
            Some(checkpoints) => {
                let cleaned = self.processor.clean(&record);
                let store = checkpoints.checkpointer.store();
                let ready = load_user(&mut self.processor, store, cleaned)?;
                self.processor
                    .process_ready(&record, ready, wall_clock_ms())
            }
        };
        state.tracker.add(record.source, processed.holds());
        if let Some(checkpoints) = &mut self.checkpoints {
            let source = record.source;
            checkpoints
                .checkpointer
                .applied(source.key(), source.offset);
        }
        self.send_all(state, processed.outputs).await?;
        if self.processor.item_work_full() {
            self.flush_step(state).await?;
        }
        if self
            .checkpoints
            .as_ref()
            .is_some_and(|c| c.checkpointer.full())
        {
            self.checkpoint(state).await?;
        }
        Ok(())
    }

    /// Queues outputs, and a dead letter in place of each output refused meanwhile.
    async fn send_all(&self, state: &mut State, outputs: Vec<Output>) -> Result<(), RunError> {
        let mut queue = VecDeque::from(outputs);
        loop {
            for refused in state.refused.drain(..) {
                queue.push_front(self.replacement(refused)?);
            }
            let Some(mut output) = queue.pop_front() else {
                return Ok(());
            };
            self.topics.frame(&mut output);
            let State {
                tracker,
                in_flight,
                refused,
                ..
            } = state;
            let topic = self.topics.of(output.destination);
            let sent = send(&self.producer, topic, output, in_flight, |acked| {
                record_ack(tracker, refused, (&self.latency_us, &self.metrics), acked)
            })
            .await;
            match sent {
                Err(RunError::Delivery(DeliveryError::Refused(r))) => state.refused.push(*r),
                other => other?,
            }
        }
    }

    /// The dead letter that takes a refused output's place (and holds its inputs' offsets).
    fn replacement(&self, refused: Refused) -> Result<Output, RunError> {
        let (topic, code) = (refused.topic.clone(), refused.code.clone());
        self.metrics.count_refused(&topic, &code);
        tracing::warn!(%topic, %code, key = %refused.key, bytes = refused.payload.len(), "output refused by its topic; publishing a dead letter in its place");
        dead_letter::refused_output(refused, &self.inputs)
            .ok_or(RunError::DeadLetterUnusable { topic, code })
    }

    fn on_acked(&self, state: &mut State, acked: Acked) -> Result<(), RunError> {
        record_ack(
            &mut state.tracker,
            &mut state.refused,
            (&self.latency_us, &self.metrics),
            acked,
        )
    }

    /// Publishes the item work and at most `FLUSH_STEP` coalesced updates that are due
    /// (ranking each), noting whether more are due.
    async fn flush_step(&mut self, state: &mut State) -> Result<(), RunError> {
        let now_ms = wall_clock_ms();
        let flushed = self.processor.flush_due(now_ms, FLUSH_STEP);
        state.flush_owed = self.processor.owes(now_ms);
        self.send_flushed(state, flushed).await
    }

    async fn send_flushed(&mut self, state: &mut State, flushed: Flushed) -> Result<(), RunError> {
        for waiter in flushed.released {
            state.tracker.resolve(waiter);
        }
        for (waiter, more) in flushed.more_holds {
            state.tracker.hold(waiter, more);
        }
        self.send_all(state, flushed.outputs).await
    }

    async fn checkpoint_if_due(&mut self, state: &mut State) -> Result<(), RunError> {
        if self
            .checkpoints
            .as_ref()
            .is_some_and(|c| c.checkpointer.due())
        {
            self.checkpoint(state).await?;
        }
        Ok(())
    }

    /// Calls a checkpoint round and joins it. One write at a time: while this worker's last
    /// is pending, the next waits (`due` stays true).
    async fn checkpoint(&mut self, state: &mut State) -> Result<(), RunError> {
        if self.checkpoints.is_none() || state.writing.is_some() {
            return Ok(());
        }
        self.rounds.call(&mut self.called);
        self.join_round(state).await
    }

    /// Hands in this worker's part of the open round (after its previous write is done):
    /// its changed users, the changelog records of them, and its partitions' positions. The
    /// last to arrive cuts the item side and writes the round; the others wait for that cut.
    async fn join_round(&mut self, state: &mut State) -> Result<(), RunError> {
        self.wait_written(state).await?;
        self.deliver_item_work(state).await?;
        let Some(checkpoints) = &mut self.checkpoints else {
            return Ok(());
        };
        let started = Instant::now();
        let engine = self.processor.engine_mut();
        let owned = owned_partitions(&self.consumer.context().health, &self.inputs);
        let owns = |key: PartitionKey| owned.contains(&key);
        let changelog = checkpoints.changelog.as_mut().map(|changelog| {
            let users = engine.changed_portable_users();
            let carry = |stream| changelog.carry(engine, stream);
            let records = checkpoint_records(
                users,
                (
                    checkpoints.checkpointer.applied_offsets(),
                    checkpoints.checkpointer.durable_offsets(),
                ),
                &self.inputs,
                (engine.stream_times(), carry),
                owns,
            );
            (changelog.topic.clone(), records)
        });
        let covers = checkpoints.checkpointer.begin_cut(engine);
        let (done, outcome) = oneshot::channel();
        state.writing = Some(Writing {
            done: outcome,
            covers: covers.clone(),
            started,
        });
        let (users_done, users) = oneshot::channel();
        state.capturing = Some(users_done);
        let part = Part {
            worker: self.index,
            covers,
            users,
            changelog,
            done,
        };
        match self.rounds.arrive(part)? {
            Arrival::Leader(parts, release) => {
                let to = self.write_to();
                checkpoint_round::lead(self.processor.engine(), parts, release, to);
            }
            Arrival::Follower(released) => released.await.map_err(|_| Abandoned)?,
        }
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "checkpoint cut");
        Ok(())
    }

    /// Sends the item work of the inputs applied so far and waits until everything in flight
    /// is acknowledged: a checkpoint then covers no input whose work could still be lost (after
    /// a crash, the inputs after it are read again, and owners skip work they applied).
    /// Waits as long as it takes, as backpressure does: during an outage, the worker stops.
    async fn deliver_item_work(&mut self, state: &mut State) -> Result<(), RunError> {
        if !self.processor.sends_item_work() {
            return Ok(());
        }
        let work = self.processor.flush_item_work();
        self.send_flushed(state, work).await?;
        loop {
            while let Some(acked) = state.in_flight.next().await {
                self.on_acked(state, acked)?;
            }
            if state.refused.is_empty() {
                return Ok(());
            }
            self.send_all(state, Vec::new()).await?;
        }
    }

    /// Looks up at most `budget` more users of this worker's part of a round, and hands the
    /// part over once complete.
    fn step_cut(&mut self, state: &mut State, budget: usize) {
        if state.capturing.is_none() {
            return;
        }
        if let Some(users) = self.processor.engine_mut().continue_users_cut(budget) {
            let _ = state.capturing.take().expect("a cut under way").send(users);
        }
    }

    /// Completes this worker's part of the round being written, and waits for the write.
    async fn wait_written(&mut self, state: &mut State) -> Result<(), RunError> {
        self.step_cut(state, usize::MAX);
        if state.writing.is_some() {
            let done = written(&mut state.writing).await;
            self.on_written(state, done)?;
        }
        Ok(())
    }

    /// Where this worker writes a round it leads.
    fn write_to(&self) -> WriteTo {
        let checkpointer = &self.checkpoints.as_ref().expect("a state dir").checkpointer;
        WriteTo {
            store: checkpointer.store().clone(),
            topics: checkpointer.topics().to_vec(),
            producer: self.producer.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// A checkpoint is durable: its offsets may be committed, and users it wrote may leave memory.
    fn on_written(
        &mut self,
        state: &mut State,
        done: Result<CheckpointSize, RunError>,
    ) -> Result<(), RunError> {
        let writing = state.writing.take().expect("a write was pending");
        let size = done?;
        let Some(checkpoints) = &mut self.checkpoints else {
            return Ok(());
        };
        checkpoints.checkpointer.written(writing.covers);
        self.metrics.checkpoint_bytes.set(size.bytes as i64);
        self.metrics.users_in_store.set(size.users_stored as i64);
        let evicted = match checkpoints.max_users {
            0 => 0,
            cap => self.processor.evict_users(cap),
        };
        tracing::debug!(
            records = size.records,
            bytes = size.bytes,
            evicted,
            ms = writing.started.elapsed().as_millis() as u64,
            "checkpoint written"
        );
        Ok(())
    }

    /// Installs a partition's users from the changelog when it is newer than the local state
    /// (another instance advanced the partition): their records and the positions they reflect
    /// go to the store in one batch, and their in-memory copies are dropped. Returns the
    /// positions to continue from (none when the local state is current).
    async fn restore(
        &mut self,
        state: &mut State,
        log: PartitionLog,
    ) -> Result<Restored, RunError> {
        self.wait_written(state).await?;
        let Some(checkpoints) = &mut self.checkpoints else {
            return Ok(Vec::new());
        };
        let positions: Vec<(PartitionKey, i64)> = log
            .positions
            .iter()
            .filter_map(|(name, &next)| Some((log.input_key(&self.inputs, name)?, next)))
            .collect();
        let newer = positions.iter().any(|(key, next)| {
            checkpoints
                .checkpointer
                .durable_offsets()
                .get(key)
                .is_none_or(|&local| *next > local)
        });
        if !newer {
            tracing::info!(
                partition = log.partition,
                "local state is current; nothing restored"
            );
            return Ok(Vec::new());
        }
        let engine = self.processor.engine_mut();
        let users: Vec<(String, Vec<u8>)> = log
            .users
            .iter()
            .map(|(id, user)| (id.clone(), engine.localize_user(id, user)))
            .collect();
        let store = checkpoints.checkpointer.store().clone();
        let count = users.len();
        let stored = tokio::task::spawn_blocking(move || store.write_restored(&users))
            .await
            .map_err(RunError::Panicked)??;
        for &(key, next) in &positions {
            checkpoints.checkpointer.restored(key, next);
        }
        // The partition continues at the stream time it had on its previous owner.
        for (name, &time) in &log.stream_times {
            if let Some(key) = log.input_key(&self.inputs, name) {
                self.processor.continue_stream_time(key, time);
            }
        }
        let dedup_keys = self.adopt_carried_keys(&log);
        self.metrics.users_in_store.set(stored as i64);
        if log.unknown > 0 {
            tracing::warn!(
                partition = log.partition,
                records = log.unknown,
                "changelog records of a kind a later build wrote were left out; upgrade this member"
            );
        }
        tracing::info!(
            partition = log.partition,
            users = count,
            records = log.records,
            dedup_keys,
            dedup_keys_unreadable = log.unreadable_carried,
            ?positions,
            "partition restored from the changelog"
        );
        Ok(positions)
    }

    /// Takes the restored partition's dedup keys cut up to its position, so it drops the
    /// duplicates its previous owner would have; returns how many.
    fn adopt_carried_keys(&mut self, log: &PartitionLog) -> usize {
        let mut adopted = 0;
        for restored in log.carried_keys() {
            let Some(key) = log.input_key(&self.inputs, restored.topic) else {
                continue;
            };
            let stream = stream_of(key);
            (self.processor.engine_mut()).adopt_dedup_keys(stream, &restored.keys);
            let changelog = self.checkpoints.as_mut().and_then(|c| c.changelog.as_mut());
            if let Some(changelog) = changelog {
                changelog.adopted(stream, restored.next_slot);
            }
            adopted += restored.keys.len();
        }
        adopted
    }

    /// Stores for commit the offsets whose outputs are acknowledged — and, with a state dir,
    /// that the last checkpoint covers (the state's offsets are the truth; Kafka's are for lag).
    fn store_offsets(&self, state: &mut State) {
        for (key, offset) in state.tracker.take_advanced() {
            state.acked_through.insert(key, offset);
        }
        for (&key, &acked) in &state.acked_through {
            let PartitionKey { topic, partition } = key;
            let name = &self.inputs[topic as usize];
            let limit = match &self.checkpoints {
                None => acked,
                Some(c) => match c.checkpointer.durable_offsets().get(&key) {
                    Some(&next) => acked.min(next - 1),
                    None => continue,
                },
            };
            if state.stored.get(&key).is_some_and(|&s| s >= limit) {
                continue;
            }
            // A partition revoked meanwhile refuses the store; its new owner re-reads from the
            // last commit, which is the at-least-once promise.
            match self.consumer.store_offset(name, partition, limit) {
                Ok(()) => {
                    state.stored.insert(key, limit);
                }
                Err(err) => {
                    tracing::debug!(topic = %name, partition, offset = limit, error = %err, "offset not stored")
                }
            }
        }
    }

    /// Publishes everything owed and waits for acknowledgements (the caller commits).
    async fn drain(&mut self, state: &mut State, drain_ms: u64) -> Result<(), RunError> {
        let flushed = self.processor.flush_all(wall_clock_ms());
        self.send_flushed(state, flushed).await?;
        state.flush_owed = false;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(drain_ms);
        while let Ok(Some(acked)) = tokio::time::timeout_at(deadline, state.in_flight.next()).await
        {
            self.on_acked(state, acked)?;
        }
        self.store_offsets(state);
        if state.in_flight.is_empty() {
            Ok(())
        } else {
            Err(RunError::DrainTimeout {
                open: state.tracker.open_events(),
                drain_ms,
            })
        }
    }

    /// One warning per rejection reason seen since the last, every `REJECTION_LOG_INTERVAL`
    /// (and at the end).
    fn log_rejections(&mut self, now: bool) {
        if !now && self.last_rejection_log.elapsed() < REJECTION_LOG_INTERVAL {
            return;
        }
        let seconds = self.last_rejection_log.elapsed().as_secs();
        self.last_rejection_log = Instant::now();
        let stats = self.processor.stats();
        let before = &self.rejections_logged;
        for (reason, &count) in &stats.rejected {
            let logged = before.rejected.get(reason).copied().unwrap_or(0);
            if count > logged {
                tracing::warn!(
                    worker = self.index,
                    reason = %reason,
                    count = count - logged,
                    seconds,
                    latest = self.processor.latest_detail(reason).unwrap_or_default(),
                    "input rejected to the dead letters"
                );
            }
        }
        if let Some(nearly_all) = stats.nearly_all_rejected(before) {
            tracing::error!(
                worker = self.index,
                reason = %nearly_all.reason,
                rejected = nearly_all.rejected,
                consumed = nearly_all.consumed,
                seconds,
                hint = crate::clean::hint(&nearly_all.reason),
                "nearly every input is rejected for the same reason"
            );
        }
        self.rejections_logged = stats.clone();
    }

    fn publish_stats(&mut self) {
        let mut slots = self.stats.lock().expect("not poisoned");
        slots[self.index] = self.processor.totals();
        // Workers add their own users; the item model is shared.
        let users = self.processor.engine().user_count() as i64;
        self.metrics
            .users_in_memory
            .inc_by(users - self.users_reported);
        self.users_reported = users;
        self.metrics
            .items
            .set(self.processor.engine().item_count() as i64);
        self.metrics
            .producer_queue
            .set(self.producer.in_flight_count() as i64);
    }
}

/// The input partitions this member holds now whose users are not on their way in from the
/// changelog: only their users in memory are current, and only theirs (and their positions)
/// does a checkpoint write to the changelog. A member that lost a partition may still hold
/// stale copies of its users, touched since by a publication or a query; written, they would
/// overwrite the new owner's records.
fn owned_partitions(health: &Health, inputs: &[String]) -> BTreeSet<PartitionKey> {
    let restoring = health.restoring();
    let mut owned = BTreeSet::new();
    for (index, topic) in inputs.iter().enumerate() {
        for partition in health.held_partitions(topic) {
            if !restoring.contains(&partition) {
                owned.insert(PartitionKey::new(index as u16, partition));
            }
        }
    }
    owned
}

/// Puts a user the store holds back in memory, unless already there, before a query reads it.
fn load_stored_user(
    processor: &mut Processor,
    store: &StateStore,
    user_id: &str,
) -> Result<(), StoreError> {
    let loaded = processor.load_user(user_id, |user| store.user(user));
    loaded.map_err(|err| store_error(store, err))
}

/// Puts a user the store holds back in memory before their event is applied.
fn load_user(
    processor: &mut Processor,
    store: &StateStore,
    cleaned: Cleaned,
) -> Result<Ready, RunError> {
    let loaded = processor.load(cleaned, |user| store.user(user));
    Ok(loaded.map_err(|err| store_error(store, err))?)
}

/// A user the store cannot give back, as the store's error (naming its path and the user).
fn store_error(store: &StateStore, err: LoadError<StoreError>) -> StoreError {
    match err {
        LoadError::Store(err) => err,
        LoadError::Corrupt { user, source } => StoreError::Corrupt {
            path: store.path().display().to_string(),
            detail: format!("user {user:?}: {source}"),
        },
    }
}

fn record_ack(
    tracker: &mut OffsetTracker,
    refused: &mut Vec<Refused>,
    latency: (&Latency, &Metrics),
    acked: Acked,
) -> Result<(), RunError> {
    match acked.result {
        Ok(()) => {}
        // Its waiters came with the refusal: they wait for the replacement.
        Err(DeliveryError::Refused(r)) => {
            refused.push(*r);
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    }
    for waiter in acked.waiters {
        tracker.resolve(waiter);
    }
    if let (Destination::Recommendations, Some(cause_ms)) = (acked.destination, acked.cause_ts_ms) {
        let micros = (wall_clock_ms() - cause_ms).max(0) as u64 * 1000;
        latency
            .0
            .lock()
            .expect("not poisoned")
            .saturating_record(micros);
        latency.1.event_to_output.observe(micros as f64 / 1e6);
    }
    Ok(())
}
