//! The deployment files run as written, with the tools operators use, on the Tansu broker:
//!
//! - the compose file's loading recipe (its `load` command, the image's config and entrypoint,
//!   its topics and environment) loads MovieLens and `run` learns from every row;
//! - a real Prometheus scrapes that `run` and every Grafana expression returns data, and
//!   `promtool check metrics` accepts the scrape;
//! - `run` as the systemd unit starts it, inside the unit's syscall filter (systemd's own
//!   syscall sets, enforced by libseccomp), consumes, checkpoints and stops cleanly.
//!
//! `#[ignore]`d without a broker; `.ci/run` installs the tools (prometheus, python3-seccomp) and
//! runs them. Tansu has no SASL users here, so the compose file's SASL client settings are the
//! one part left out.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use common::http::{encode, get};
use common::tansu::{free_port, streamrec, terminate, Broker};
use common::wait_until;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The image's build file, read once.
static DOCKERFILE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap());

fn compose() -> Yaml {
    let text = std::fs::read_to_string(repo("deploy/docker-compose.yml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

/// A tool the operators use, from `STREAMREC_<NAME>` or the PATH.
fn tool(name: &str) -> PathBuf {
    let variable = format!("STREAMREC_{}", name.to_uppercase().replace('-', "_"));
    if let Ok(path) = std::env::var(&variable) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} not found: install it (.ci/run does) or set {variable}"))
}

/// The image's paths on this machine: the config the Dockerfile copies, the data the compose
/// file mounts, the state volume.
struct Paths {
    data: PathBuf,
    state: PathBuf,
}

impl Paths {
    fn map(&self, arg: &str) -> String {
        let copied = DOCKERFILE
            .lines()
            .filter_map(|l| l.strip_prefix("COPY config/"))
            .find_map(|l| l.split_once(' '))
            .expect("the Dockerfile copies a config");
        if arg == copied.1 {
            return repo(&format!("config/{}", copied.0)).display().to_string();
        }
        if let Some(file) = arg.strip_prefix("/data/") {
            return self.data.join(file).display().to_string();
        }
        if arg == "/var/lib/streamrec/state" {
            return self.state.display().to_string();
        }
        arg.to_owned()
    }
}

/// `JSON ["a", "b"]` instructions of the Dockerfile's final stage.
fn dockerfile_array(instruction: &str) -> Vec<String> {
    let line = DOCKERFILE
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction}"));
    serde_json::from_str(line).unwrap()
}

/// The streamrec services' environment, for Tansu: the brokers it listens on, the admin
/// listener on a free port, and no SASL (Tansu has no users here).
fn service_env(broker: &Broker, admin: &str, paths: &Paths) -> BTreeMap<String, String> {
    let compose = compose();
    let mut env: BTreeMap<String, String> = compose["services"]["streamrec"]["environment"]
        .as_hash()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .filter(|(k, _)| !k.contains("SASL") && !k.ends_with("SECURITY_PROTOCOL"))
        .collect();
    env.insert("STREAMREC__KAFKA__BROKERS".into(), broker.address.clone());
    env.insert("STREAMREC__ADMIN__LISTEN".into(), admin.to_owned());
    let state = DOCKERFILE
        .lines()
        .find_map(|l| {
            l.trim_start_matches("ENV ")
                .strip_prefix("STREAMREC__STATE__DIR=")
        })
        .unwrap()
        .trim_end_matches(" \\");
    env.insert("STREAMREC__STATE__DIR".into(), paths.map(state));
    env
}

/// kafka-setup's topics, made on Tansu with its partition count.
fn make_setup_topics(broker: &Broker) {
    let setup = &compose()["services"]["kafka-setup"]["environment"];
    let partitions: i32 = setup["PARTITIONS"].as_str().unwrap().parse().unwrap();
    for key in ["INPUT_TOPICS", "OTHER_TOPICS", "COMPACTED_TOPICS"] {
        for topic in setup[key].as_str().unwrap().split_whitespace() {
            broker.create_topic_with(topic, partitions);
        }
    }
}

fn metric(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

struct Prometheus {
    child: Child,
    address: String,
}

impl Prometheus {
    /// A Prometheus server with `deploy/prometheus.yml` and the alerts it loads, its target
    /// replaced by `target`, scraping and evaluating every second.
    fn scraping(target: &str, dir: &Path) -> Prometheus {
        let deployed = std::fs::read_to_string(repo("deploy/prometheus.yml")).unwrap();
        let config = deployed
            .replace("streamrec:9464", target)
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
        assert!(
            config.contains(target) && !config.contains("15s"),
            "{config}"
        );
        let path = dir.join("prometheus.yml");
        std::fs::write(&path, config).unwrap();
        std::fs::copy(repo("deploy/alerts.yml"), dir.join("alerts.yml")).unwrap();
        let check = Command::new(tool("promtool"))
            .args(["check", "config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let address = format!("127.0.0.1:{}", free_port());
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap();
        wait_until("Prometheus answers", Duration::from_secs(30), || {
            get(&address, "/-/ready", None).is_some_and(|(status, _)| status == 200)
        });
        Prometheus { child, address }
    }

    /// Every alerting rule loaded, with its health after its evaluations so far.
    fn rules(&self) -> Vec<serde_json::Value> {
        let answer = self.api("/api/v1/rules");
        let groups = answer["data"]["groups"].as_array().unwrap();
        let rules = groups.iter().flat_map(|g| g["rules"].as_array().unwrap());
        rules.cloned().collect()
    }

    /// An instant query's result vector.
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let answer = self.api(&format!("/api/v1/query?query={}", encode(expr)));
        answer["data"]["result"].as_array().unwrap().clone()
    }

    /// The HTTP API's answer to `path`, which must be a 200.
    fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = get(&self.address, path, None).expect("Prometheus answers");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a shop's broken producer adds to the stream, so the rejection panel has data.
fn broken_messages(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| (format!("u{i}"), b"{not json".to_vec()))
        .collect()
}

const EXPERIMENT: &str = r#"[{name = "mf-weight", variants = [{name = "control", share = 0.5}, {name = "heavy", share = 0.5, blend = {mf = 0.9}}]}]"#;

#[test]
#[ignore = "needs the Tansu broker, prometheus and promtool: set STREAMREC_TANSU (.ci/run does)"]
fn the_compose_loading_recipe_feeds_run_and_every_dashboard_query_returns_data() {
    let Some(ratings) = common::dataset("ml-latest-small/ratings.csv") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths {
        data: ratings.parent().unwrap().to_owned(),
        state: dir.path().join("state"),
    };
    let broker = Broker::start();
    make_setup_topics(&broker);
    let admin = format!("127.0.0.1:{}", free_port());
    let mut env = service_env(&broker, &admin, &paths);
    // An experiment, set the way a deployment sets any key: the per-variant panels get data.
    env.insert("STREAMREC__ENGINE__EXPERIMENTS".into(), EXPERIMENT.into());
    let compose = compose();

    // docker compose run --rm load: the image's entrypoint, then the service's command.
    let load: Vec<String> = compose["services"]["load"]["command"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| paths.map(a.as_str().unwrap()))
        .collect();
    let entrypoint = dockerfile_array("ENTRYPOINT");
    let loaded = streamrec()
        .args(&entrypoint[1..])
        .args(&load)
        .envs(&env)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&loaded.stdout).into_owned()
        + &String::from_utf8_lossy(&loaded.stderr);
    assert!(loaded.status.success(), "{said}");
    assert!(said.contains("produced 100836 events to events"), "{said}");
    assert!(!said.contains("warning"), "{said}");
    let mut kafka = streamrec::config::Config::default().kafka;
    kafka.brokers = broker.address.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(streamrec::kafka::produce_messages(
            &kafka,
            "events",
            &broken_messages(20),
            false,
            None,
        ))
        .unwrap();

    // docker compose up: the image's entrypoint and command, the service's environment.
    let command: Vec<String> = dockerfile_array("CMD")
        .iter()
        .map(|a| paths.map(a))
        .collect();
    let run = streamrec()
        .args(&entrypoint[1..])
        .args(&command)
        .envs(&env)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("run.log")).unwrap())
        .spawn()
        .unwrap();
    let prometheus = Prometheus::scraping(&admin, dir.path());
    let mut scrape = String::new();
    wait_until("run consumes the load", Duration::from_secs(240), || {
        scrape = get(&admin, "/metrics", None)
            .map(|r| r.1)
            .unwrap_or_default();
        metric(&scrape, "streamrec_events_consumed_total") == Some(100_856.0)
    });
    assert_eq!(
        metric(&scrape, "streamrec_events_applied_total"),
        Some(100_836.0)
    );
    assert_eq!(
        metric(
            &scrape,
            "streamrec_events_rejected_total{reason=\"not_json\"}"
        ),
        Some(20.0),
        "only the broken producer's messages are rejected:\n{scrape}"
    );
    // Latency, lag and checkpoints need a few more scrapes and statistics intervals.
    std::thread::sleep(Duration::from_secs(8));

    let scrape = get(&admin, "/metrics", None).unwrap().1;
    let mut promtool = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), scrape.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let targets = prometheus.query("up{job=\"streamrec\"}");
    assert_eq!(targets.len(), 1, "Prometheus scrapes run");
    assert_eq!(targets[0]["value"][1], "1", "and the scrape succeeds");
    let text = std::fs::read_to_string(repo("deploy/grafana/streamrec.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let result = prometheus.query(expr);
            assert!(
                !result.is_empty(),
                "{:?}: {expr} returned no data",
                panel["title"]
            );
            for series in &result {
                let value: f64 = series["value"][1].as_str().unwrap().parse().unwrap();
                assert!(value.is_finite(), "{:?}: {expr} = {value}", panel["title"]);
            }
            queried += 1;
        }
    }
    assert!(queried >= 15, "{queried} expressions");
    // The alerts evaluate on what run exports, with no error (a type error, a bad match).
    let rules = prometheus.rules();
    assert!(rules.len() >= 10, "{} alerting rules loaded", rules.len());
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        assert!(
            rule["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001")),
            "{rule}"
        );
    }

    let printed = terminate(run);
    let stats: serde_json::Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(stats["applied"], 100_836);
    let users = common::read_topic(
        &broker.address,
        &kafka.recommendations_topic,
        6,
        usize::MAX,
        Duration::from_secs(3),
    )
    .into_iter()
    .map(|r| r.key)
    .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(users.len(), 610, "every MovieLens user got recommendations");
    assert!(common::schemas::validate_outputs_of(&broker.address, &kafka) > 0);
}

/// The unit's `Environment=` settings, its state dir and admin listener moved to this test's.
fn unit_env(unit: &str, state: &Path, admin: &str) -> BTreeMap<String, String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|l| l.split_once('='))
        .map(|(key, value)| {
            let value = match key {
                "STREAMREC__STATE__DIR" => state.display().to_string(),
                "STREAMREC__ADMIN__LISTEN" => admin.to_owned(),
                _ => value.to_owned(),
            };
            (key.to_owned(), value)
        })
        .collect()
}

#[test]
#[ignore = "needs the Tansu broker and python3-seccomp: set STREAMREC_TANSU (.ci/run does)"]
fn run_works_inside_the_systemd_units_syscall_filter() {
    let unit_path = repo("deploy/systemd/streamrec.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let mut config = streamrec::config::Config::default();
    config.kafka.brokers = broker.address.clone();
    for topic in config.kafka.all_topics() {
        broker.create_topic(&topic);
    }
    let events = common::outage::views(2_000, 200);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(streamrec::kafka::produce_messages(
            &config.kafka,
            "events",
            &events,
            false,
            None,
        ))
        .unwrap();

    let exec: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|a| match a {
            "/etc/streamrec/streamrec.toml" => repo("config/streamrec.toml").display().to_string(),
            other => other.to_owned(),
        })
        .collect();
    let admin = format!("127.0.0.1:{}", free_port());
    let state = dir.path().join("state");
    let run = Command::new("/usr/bin/python3")
        .arg(repo("tests/support/systemd_seccomp.py"))
        .arg(&unit_path)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_streamrec"))
        .args(&exec)
        .envs(unit_env(&unit, &state, &admin))
        // The operator's /etc/streamrec/streamrec.env names the cluster.
        .env("STREAMREC__KAFKA__BROKERS", &broker.address)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("run.log")).unwrap())
        .spawn()
        .unwrap();
    wait_until(
        "the admin listener answers",
        Duration::from_secs(30),
        || get(&admin, "/healthz", None).is_some(),
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", run.id())).unwrap();
    assert!(
        status.lines().any(|l| l == "Seccomp:\t2"),
        "run is inside a seccomp filter"
    );
    let mut scrape = String::new();
    wait_until(
        "run consumes and checkpoints",
        Duration::from_secs(120),
        || {
            scrape = get(&admin, "/metrics", None)
                .map(|r| r.1)
                .unwrap_or_default();
            metric(&scrape, "streamrec_events_applied_total") == Some(2_000.0)
                && metric(&scrape, "streamrec_users_in_store") == Some(200.0)
        },
    );
    assert_eq!(get(&admin, "/readyz", None).unwrap().0, 200);
    let printed = terminate(run);
    assert!(printed.contains("\"applied\":2000"), "{printed}");
    let digest = streamrec()
        .args(["state", "digest", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(digest.status.success(), "the state dir it wrote opens");
}
