//! Which worker answers a query: a user's query goes to the worker that owns the user's
//! partition (the partition the events' producers give the user id, `partitioner`), since
//! that worker holds the user's state; item and session queries, which read only the item
//! model, go to the workers in turn. A user of a partition another instance of the group
//! announced is sent there (`members`); an answer this instance cannot give fully says why
//! (`Degraded`).

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::job::QueryJob;
use super::members::Members;
use super::partitioner::Partitioner;
use crate::kafka::Health;
use crate::offsets::worker_of;

/// Why an answer may be less than the user's own: it is still given, marked so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Degraded {
    /// The events topic's partitions are not known yet (the pipeline is starting).
    Starting,
    /// The user's partition is being restored from the changelog.
    Restoring,
    /// Another instance of the group holds the user's partition.
    NotOwner,
}

impl Degraded {
    pub const ALL: [Degraded; 3] = [Degraded::Starting, Degraded::Restoring, Degraded::NotOwner];

    /// The `Streamrec-Degraded` header's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Degraded::Starting => "starting",
            Degraded::Restoring => "restoring",
            Degraded::NotOwner => "not-owner",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub worker: usize,
    pub degraded: Option<Degraded>,
    /// The query address of the instance that holds the user's partition, when another one
    /// does (with `query.members_topic`): the caller is sent there.
    pub redirect: Option<String>,
}

/// The query queue of a worker is full or gone: the caller is told to come back (503).
#[derive(Debug)]
pub struct Busy;

pub struct Routes {
    workers: Vec<mpsc::Sender<QueryJob>>,
    partitioner: Partitioner,
    events_topic: String,
    /// The events topic's partition count; 0 until the Kafka loop has read it.
    partitions: AtomicI32,
    health: Arc<Health>,
    next: AtomicUsize,
    /// With `query.members_topic`: the group's announcements, and this instance's id.
    members: Option<(Arc<Members>, String)>,
}

/// The routes, and each worker's end of its query queue (handed to the workers at start).
pub type Queries = (Arc<Routes>, Vec<mpsc::Receiver<QueryJob>>);

/// Queries waiting per worker before callers are turned away.
pub const QUERY_QUEUE: usize = 256;

impl Routes {
    /// The routes, and each worker's end of its query queue.
    pub fn new(
        workers: usize,
        partitioner: Partitioner,
        events_topic: &str,
        health: Arc<Health>,
        members: Option<(Arc<Members>, String)>,
    ) -> Queries {
        let (senders, receivers) = (0..workers).map(|_| mpsc::channel(QUERY_QUEUE)).unzip();
        let routes = Routes {
            workers: senders,
            partitioner,
            events_topic: events_topic.to_owned(),
            partitions: AtomicI32::new(0),
            health,
            next: AtomicUsize::new(0),
            members,
        };
        (Arc::new(routes), receivers)
    }

    pub fn set_partitions(&self, partitions: i32) {
        self.partitions.store(partitions, Ordering::Relaxed);
    }

    /// The group's announcements (with `query.members_topic`).
    pub fn members(&self) -> Option<Arc<Members>> {
        self.members.as_ref().map(|(members, _)| members.clone())
    }

    pub fn partitioner(&self) -> Partitioner {
        self.partitioner
    }

    /// The events topic's partition count (0 while unknown).
    pub fn partitions(&self) -> i32 {
        self.partitions.load(Ordering::Relaxed)
    }

    /// The worker that owns `user_id`, and whether its answer is degraded.
    pub fn user(&self, user_id: &str) -> Route {
        let partitions = self.partitions();
        if partitions == 0 {
            return Route {
                worker: 0,
                degraded: Some(Degraded::Starting),
                redirect: None,
            };
        }
        let partition = self.partitioner.partition(user_id.as_bytes(), partitions);
        let held = self.health.holds(&self.events_topic, partition);
        let redirect = (!held).then(|| self.owner_elsewhere(partition)).flatten();
        let degraded = if self.health.is_restoring(partition) {
            Some(Degraded::Restoring)
        } else if !held && redirect.is_none() {
            Some(Degraded::NotOwner)
        } else {
            None
        };
        Route {
            worker: worker_of(partition, self.workers.len()),
            degraded,
            redirect,
        }
    }

    /// The query address of the other instance that announced `partition` last.
    fn owner_elsewhere(&self, partition: i32) -> Option<String> {
        let (members, me) = self.members.as_ref()?;
        let (owner, url) = members.owner_of(partition)?;
        (owner != *me).then_some(url)
    }

    /// A worker for a query that reads only the item model: each in turn.
    pub fn any(&self) -> Route {
        let next = self.next.fetch_add(1, Ordering::Relaxed);
        Route {
            worker: next % self.workers.len(),
            degraded: None,
            redirect: None,
        }
    }

    /// Queues a query on its route's worker, or says the worker is busy.
    pub fn send(&self, route: Route, job: QueryJob) -> Result<(), Busy> {
        self.workers[route.worker].try_send(job).map_err(|_| Busy)
    }
}
