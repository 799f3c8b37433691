//! A `run` instance in the test process, with its query listener on port 0: started, asked
//! over plain HTTP/1.1, watched (progress, health) and stopped.

use std::sync::Arc;
use std::time::Duration;

use streamrec::config::Config;
use streamrec::kafka::{Health, Observers};
use streamrec::pipeline::Stats;
use streamrec::runtime::run;
use tokio::sync::watch;

use super::http::{request, Answer};
use super::wait_until;

/// A running instance: its query address, its progress and the way to stop it.
pub struct Instance {
    pub address: String,
    pub progress: watch::Receiver<Stats>,
    pub health: Arc<Health>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    running: tokio::task::JoinHandle<()>,
}

impl Instance {
    pub async fn start(config: &Config) -> Instance {
        let (progress_tx, progress) = watch::channel(Stats::default());
        let observers = Observers {
            progress: Some(progress_tx),
            ..Observers::default()
        };
        let (health, address) = (observers.health.clone(), observers.query_address.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = config.clone();
        let running = tokio::spawn(async move {
            let until = async { stopped.await.unwrap_or(()) };
            run(&config, until, observers)
                .await
                .expect("the run succeeds");
        });
        let started = std::time::Instant::now();
        while address.get().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the query listener binds"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Instance {
            address: address.get().unwrap().to_string(),
            progress,
            health,
            stop: Some(stop),
            running,
        }
    }

    pub async fn consumed(&mut self, total: u64) {
        let wait = self.progress.wait_for(|s| s.consumed >= total);
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("consumed in time")
            .unwrap();
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.call("GET", path, headers, Vec::new()).await
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let (address, method, path) = (self.address.clone(), method.to_owned(), path.to_owned());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            request(&address, &method, &path, &headers, &body).expect("an answer")
        })
        .await
        .unwrap()
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(60), self.running)
            .await
            .expect("stops in time")
            .unwrap();
    }
}

/// Waits until the group split the events topic's partitions between the two instances.
pub async fn both_hold_partitions(
    first: &Instance,
    other: &Instance,
    topic: &str,
    partitions: i32,
) {
    let (a, b, topic) = (first.health.clone(), other.health.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let held = |health: &Health| (0..partitions).filter(|&p| health.holds(&topic, p)).count();
        let split = || held(&a) > 0 && held(&b) > 0 && held(&a) + held(&b) == partitions as usize;
        let limit = Duration::from_secs(30);
        wait_until("both instances hold events partitions", limit, split);
    })
    .await
    .unwrap();
}
