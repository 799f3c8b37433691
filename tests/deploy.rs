//! The deployment files under `deploy/`: no container runs on these machines, so what can be
//! checked here is checked — every manifest parses and holds what the docs promise, the pods
//! pass the Pod Security "restricted" profile, the Dockerfile builds the way CI does from a
//! context without `target/`, compose makes the topics the image's config uses, the dashboard
//! queries only metrics `run` exports with units that match them, and the systemd unit passes
//! `systemd-analyze verify` where that tool exists. `.ci/deploy` runs the operators' own tools
//! (hadolint, kubernetes-validate, checkov, docker compose, promtool, systemd-analyze security)
//! and `tests/deploy_tansu.rs` runs the loading recipe, Prometheus and the sandboxed unit.

use std::path::PathBuf;

use yaml_rust2::{Yaml, YamlLoader};

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

fn yaml(file: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(deploy(file)).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn kubernetes_manifests_hold_a_stateful_set_with_probes_on_the_admin_endpoints() {
    let docs = yaml("kubernetes/streamrec.yaml");
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["ConfigMap", "StatefulSet", "Service", "PodDisruptionBudget"]
    );
    let set = &docs[1]["spec"];
    assert!(!set["volumeClaimTemplates"][0]["spec"].is_badvalue());
    let container = &set["template"]["spec"]["containers"][0];
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let env = &container["env"];
    let instance_from_pod = env
        .as_vec()
        .unwrap()
        .iter()
        .any(|e| e["name"].as_str() == Some("STREAMREC__KAFKA__INSTANCE_ID"));
    assert!(instance_from_pod, "each pod names itself");
    pod_config(&docs);
}

/// The config a pod runs: the ConfigMap's, with what the pod's environment adds.
fn pod_config(manifests: &[Yaml]) -> streamrec::config::Config {
    let config = manifests[0]["data"]["streamrec.toml"].as_str().unwrap();
    let config = config.replace("[kafka]\n", "[kafka]\ninstance_id = \"streamrec-0\"\n");
    streamrec::config::Config::parse(&config).expect("the ConfigMap's config is valid")
}

#[test]
fn compose_runs_kafka_in_kraft_mode_streamrec_and_prometheus() {
    let compose = &yaml("docker-compose.yml")[0];
    let services = compose["services"].as_hash().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["kafka", "kafka-setup", "streamrec", "load", "prometheus"]
    );
    let kafka = &compose["services"]["kafka"];
    let env = &kafka["environment"];
    assert_eq!(
        env["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller")
    );
    assert_eq!(
        kafka["volumes"][0].as_str(),
        Some("kafka-data:/var/lib/kafka/data"),
        "Kafka's log outlives its container, like streamrec's state"
    );
    assert_eq!(env["KAFKA_LOG_DIRS"].as_str(), Some("/var/lib/kafka/data"));
    for service in services.values() {
        for port in service["ports"].as_vec().into_iter().flatten() {
            let port = port.as_str().unwrap();
            assert!(
                port.starts_with("127.0.0.1:"),
                "{port} is published beyond loopback"
            );
        }
    }
    // Host clients connect to the published port and must be told to come back to it.
    let advertised = env["KAFKA_ADVERTISED_LISTENERS"].as_str().unwrap();
    assert!(advertised.contains("HOST://localhost:9092"), "{advertised}");
    let protocols = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
        .as_str()
        .unwrap();
    for client_listener in ["INTERNAL:SASL_PLAINTEXT", "HOST:SASL_PLAINTEXT"] {
        assert!(protocols.contains(client_listener), "{protocols}");
    }
    let prometheus = &yaml("prometheus.yml")[0];
    assert_eq!(
        prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0].as_str(),
        Some("streamrec:9464")
    );
}

/// The topics kafka-setup makes are those of the image's config (config/streamrec.toml), and the
/// loading recipe writes to the topic `run` reads there.
#[test]
fn compose_makes_the_topics_of_the_image_config_and_loads_into_its_input() {
    let compose = &yaml("docker-compose.yml")[0];
    let setup = &compose["services"]["kafka-setup"]["environment"];
    let made: Vec<String> = ["INPUT_TOPICS", "OTHER_TOPICS", "COMPACTED_TOPICS"]
        .into_iter()
        .flat_map(|key| setup[key].as_str().unwrap().split_whitespace())
        .map(String::from)
        .collect();
    let image_config = streamrec::config::Config::parse(
        &std::fs::read_to_string(deploy("../config/streamrec.toml")).unwrap(),
    )
    .unwrap();
    let mut wanted = image_config.kafka.all_topics();
    let mut made_sorted = made.clone();
    wanted.sort();
    made_sorted.sort();
    assert_eq!(made_sorted, wanted);
    assert_eq!(
        setup["INPUT_TOPICS"].as_str(),
        Some(image_config.kafka.input_topics.join(" ").as_str())
    );
    let load: Vec<&str> = compose["services"]["load"]["command"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(load[0], "produce");
    assert!(
        !load.contains(&"--topic"),
        "the input topic comes from the config, so the two cannot drift apart"
    );
    assert!(load.contains(&"--shift-to-now"));
    let volume = compose["services"]["load"]["volumes"][0].as_str().unwrap();
    let input = load[load.iter().position(|a| *a == "--input").unwrap() + 1];
    let mount = volume.rsplit_once(":/").unwrap().1.trim_end_matches(":ro");
    assert!(
        input.starts_with(&format!("/{mount}/")),
        "{input} is under the mount {volume}"
    );
}

#[test]
fn images_are_tagged_with_the_crate_version() {
    let version = manifest_value("version");
    let tag = format!("streamrec:{version}");
    let docs = yaml("kubernetes/streamrec.yaml");
    let container = &docs[1]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"].as_str(), Some(tag.as_str()));
    assert_eq!(container["imagePullPolicy"].as_str(), Some("IfNotPresent"));
    let compose = &yaml("docker-compose.yml")[0];
    for service in ["streamrec", "load"] {
        assert_eq!(
            compose["services"][service]["image"].as_str(),
            Some(tag.as_str())
        );
    }
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!("-t {tag} ")),
        "the build command tags {tag}"
    );
}

fn manifest_value(key: &str) -> String {
    let manifest = std::fs::read_to_string(deploy("../Cargo.toml")).unwrap();
    manifest
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

/// The build context is everything `.dockerignore` lets through: what the Dockerfile copies,
/// never `target/` (gigabytes).
#[test]
fn the_build_context_holds_what_the_dockerfile_copies_and_nothing_built() {
    let ignore = std::fs::read_to_string(deploy("../.dockerignore")).unwrap();
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(rules[0], "*", "an allow list: nothing new slips in");
    let allowed: Vec<&str> = rules[1..]
        .iter()
        .map(|r| r.strip_prefix('!').expect("only re-inclusions after *"))
        .map(|r| r.trim_end_matches('/'))
        .collect();
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len() - 1].to_vec()
        })
        .collect();
    for source in &copied {
        let source = source.trim_end_matches('/');
        assert!(
            allowed.contains(&source),
            "{source} is copied but not in the context"
        );
    }
    assert_eq!(
        allowed.len(),
        copied.len(),
        "the context holds only what is copied"
    );
}

#[test]
fn the_dockerfile_builds_like_ci_and_runs_as_a_non_root_user() {
    let text = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    assert!(text.contains("RUN cargo build --release --locked"));
    assert!(
        text.contains("USER 10001:10001"),
        "numeric, for runAsNonRoot"
    );
    assert!(text.contains("VOLUME [\"/var/lib/streamrec\"]"));
    let floor = manifest_value("rust-version");
    assert!(
        text.contains(&format!("FROM rust:{floor}-")),
        "the build image is the toolchain floor {floor}"
    );
}

#[test]
fn the_dashboard_queries_only_metrics_run_exports() {
    let text = std::fs::read_to_string(deploy("grafana/streamrec.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    // With an experiment configured, so that the per-variant panels' families exist.
    let arms = [("experiment".to_owned(), "variant".to_owned())];
    let topics = ["r", "s", "d", "t", "m"].map(String::from);
    let metrics = streamrec::admin::Metrics::new(topics, &arms);
    let exported = metrics.families();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for family in families_in(expr) {
                assert!(
                    exported.contains(&family),
                    "{family} in {:?} is not exported",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 10);
}

/// The metric families an expression names (`streamrec_…`, without `_total` or `_bucket`).
fn families_in(expr: &str) -> Vec<String> {
    let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
    let names = words.filter(|w| w.starts_with("streamrec_"));
    let family = |name: &str| {
        name.trim_end_matches("_bucket")
            .trim_end_matches("_total")
            .to_owned()
    };
    names.map(family).collect()
}

fn alerting_rules(groups: &Yaml) -> Vec<Yaml> {
    let groups = groups.as_vec().unwrap();
    let rules = groups.iter().flat_map(|g| g["rules"].as_vec().unwrap());
    rules.cloned().collect()
}

#[test]
fn the_alerts_query_only_metrics_and_reasons_run_exports() {
    let topics = ["r", "s", "d", "t", "m"].map(String::from);
    let metrics = streamrec::admin::Metrics::new(topics, &[]);
    let exported = metrics.families();
    let rules = alerting_rules(&yaml("alerts.yml")[0]["groups"]);
    assert!(rules.len() >= 10, "{} rules", rules.len());
    for rule in &rules {
        let (alert, expr) = (
            rule["alert"].as_str().unwrap(),
            rule["expr"].as_str().unwrap(),
        );
        let named = families_in(expr);
        assert!(
            !named.is_empty() || alert == "StreamrecDown",
            "{alert}: {expr}"
        );
        for family in named {
            assert!(
                exported.contains(&family),
                "{alert}: {family} is not exported"
            );
        }
        let severity = rule["labels"]["severity"].as_str();
        assert!(matches!(severity, Some("critical" | "warning")), "{alert}");
        let annotations = &rule["annotations"];
        assert!(
            annotations["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{alert}"
        );
        assert!(annotations["description"].as_str().is_some(), "{alert}");
    }
    let item_limit = streamrec::clean::Reason::ItemLimit.code();
    let limit_rule = rules
        .iter()
        .find(|r| r["alert"].as_str() == Some("StreamrecItemLimitReached"));
    let limit_expr = limit_rule.unwrap()["expr"].as_str().unwrap();
    assert!(
        limit_expr.contains(&format!("reason=\"{item_limit}\"")),
        "{limit_expr}"
    );
}

#[test]
fn prometheus_loads_the_alerts_in_compose_and_the_operator_gets_the_same_rules() {
    let prometheus = &yaml("prometheus.yml")[0];
    assert_eq!(prometheus["rule_files"][0].as_str(), Some("alerts.yml"));
    let compose = &yaml("docker-compose.yml")[0];
    let volumes = compose["services"]["prometheus"]["volumes"]
        .as_vec()
        .unwrap();
    let mounted = volumes.iter().filter_map(Yaml::as_str);
    assert!(
        mounted
            .clone()
            .any(|v| v == "./alerts.yml:/etc/prometheus/alerts.yml:ro"),
        "{:?}",
        mounted.collect::<Vec<_>>()
    );
    let operator = &yaml("kubernetes/prometheusrule.yaml")[0];
    assert_eq!(operator["kind"].as_str(), Some("PrometheusRule"));
    let deployed = alerting_rules(&yaml("alerts.yml")[0]["groups"]);
    let operators = alerting_rules(&operator["spec"]["groups"]);
    assert_eq!(
        operators.len(),
        deployed.len(),
        "prometheusrule.yaml's rules"
    );
    for (rule, copy) in deployed.iter().zip(&operators) {
        assert_eq!(copy, rule, "prometheusrule.yaml's {:?}", rule["alert"]);
    }
}

/// What the docs promise per user held in memory and per item (`bench-state`: about 1 KB and
/// 1.2 – 5.4 KB, docs/guarantees.md).
const USER_BYTES: u64 = 1_000;
const ITEM_BYTES: u64 = 5_000;

/// `4Gi`, `4g`, `4G`: binary multiples, as Kubernetes, Docker and systemd read them.
fn memory_bytes(limit: &str) -> u64 {
    let (digits, unit) = limit.split_at(limit.find(|c: char| !c.is_ascii_digit()).unwrap());
    let scale = match unit {
        "Gi" | "g" | "G" => 1 << 30,
        "Mi" | "m" | "M" => 1 << 20,
        _ => panic!("unit of {limit}"),
    };
    digits.parse::<u64>().unwrap() * scale
}

/// Users in memory and items are capped, and what the caps hold takes at most half the
/// memory limit: the rest is the dedup window, buffers and the store's cache.
fn assert_caps_fit(deployment: &str, limit: &str, users: u64, items: u64) {
    assert!(
        users > 0 && items > 0,
        "{deployment}: users {users}, items {items}"
    );
    let held = users * USER_BYTES + items * ITEM_BYTES;
    let limit = memory_bytes(limit);
    assert!(
        2 * held <= limit,
        "{deployment}: {held} B held under a {limit} B limit"
    );
}

#[test]
fn every_deployment_caps_users_and_items_within_its_memory_limit() {
    let docs = yaml("kubernetes/streamrec.yaml");
    let config = pod_config(&docs);
    let container = &docs[1]["spec"]["template"]["spec"]["containers"][0];
    let limit = container["resources"]["limits"]["memory"].as_str().unwrap();
    let (users, items) = (config.state.max_users_in_memory, config.engine.max_items);
    assert_caps_fit("kubernetes", limit, users, items);

    let streamrec = &yaml("docker-compose.yml")[0]["services"]["streamrec"];
    let env = streamrec["environment"].as_hash().unwrap().iter();
    let env: Vec<(String, String)> = env
        .map(|(k, v)| (k.as_str().unwrap().into(), v.as_str().unwrap().into()))
        .collect();
    let config = image_config_under(&env);
    let (users, items) = (config.state.max_users_in_memory, config.engine.max_items);
    assert_caps_fit(
        "compose",
        streamrec["mem_limit"].as_str().unwrap(),
        users,
        items,
    );

    let unit = std::fs::read_to_string(deploy("systemd/streamrec.service")).unwrap();
    let env: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment=")?.split_once('='))
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let config = image_config_under(&env);
    let (users, items) = (config.state.max_users_in_memory, config.engine.max_items);
    assert_caps_fit("systemd", unit_value(&unit, "MemoryMax"), users, items);
}

/// The settings `run` reads from the image's config file under a deployment's environment, as
/// `streamrec config check` layers them (a variable that names no setting fails it).
fn image_config_under(env: &[(String, String)]) -> streamrec::config::Config {
    let checked = std::process::Command::new(env!("CARGO_BIN_EXE_streamrec"))
        .args(["config", "check", "--config"])
        .arg(deploy("../config/streamrec.toml"))
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "config check: {stderr}");
    let effective = String::from_utf8(checked.stdout).unwrap();
    streamrec::config::Config::parse(&effective).expect("config check prints a valid config")
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy("systemd/streamrec.service")).unwrap();
    let Ok(found) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    };
    assert!(found.status.success());
    // Verify a copy that runs the binary this build made (the unit names the installed path).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("streamrec.service");
    let unit = unit.replace("/usr/local/bin/streamrec", env!("CARGO_BIN_EXE_streamrec"));
    std::fs::write(&copy, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    // Complaints about this machine (no running systemd, say) do not name the unit; every
    // complaint about the unit does.
    let said = String::from_utf8_lossy(&out.stderr);
    let about_the_unit: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("streamrec.service"))
        .collect();
    assert!(about_the_unit.is_empty(), "{said}");
}

#[test]
fn every_deployment_waits_longer_than_the_shutdown_limit() {
    // The image ships config/streamrec.toml, which holds the defaults (a config unit test).
    let limit_s = streamrec::config::Config::default()
        .pipeline
        .shutdown_limit_ms
        / 1000;
    let manifests = yaml("kubernetes/streamrec.yaml");
    let pod_limit_s = pod_config(&manifests).pipeline.shutdown_limit_ms / 1000;
    let pod = &manifests[1]["spec"]["template"]["spec"];
    let pod_grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap() as u64;
    assert!(pod_grace > pod_limit_s, "Kubernetes: {pod_grace} s");
    let unit = std::fs::read_to_string(deploy("systemd/streamrec.service")).unwrap();
    let stop_s = unit_value(&unit, "TimeoutStopSec").parse::<u64>().unwrap();
    assert!(stop_s > limit_s, "systemd: {stop_s} s");
    let compose = &yaml("docker-compose.yml")[0];
    let grace = compose["services"]["streamrec"]["stop_grace_period"]
        .as_str()
        .unwrap();
    let grace_s = grace.strip_suffix('s').unwrap().parse::<u64>().unwrap();
    assert!(grace_s > limit_s, "compose: {grace}");
}

fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    let line = unit.lines().find(|l| l.starts_with(&format!("{key}=")));
    line.unwrap_or_else(|| panic!("no {key} in the unit"))[key.len() + 1..].trim()
}

/// The Pod Security Standards' "restricted" profile (which includes "baseline"), as the
/// Kubernetes docs list its controls, applied to a pod spec: one line per violation.
fn restricted_violations(pod: &Yaml) -> Vec<String> {
    let mut found = Vec::new();
    let mut violate = |what: String| found.push(what);
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host].as_bool() == Some(true) {
            violate(format!("{host} is set"));
        }
    }
    let allowed_volumes = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for volume in pod["volumes"].as_vec().into_iter().flatten() {
        for (key, _) in volume.as_hash().unwrap() {
            let key = key.as_str().unwrap();
            if key != "name" && !allowed_volumes.contains(&key) {
                violate(format!("volume type {key}"));
            }
        }
    }
    let pod_context = &pod["securityContext"];
    if !pod_context["sysctls"].is_badvalue() {
        violate("sysctls are set".into());
    }
    let containers = pod["containers"].as_vec().unwrap().iter();
    let init = pod["initContainers"].as_vec().into_iter().flatten();
    for container in containers.chain(init) {
        let name = container["name"].as_str().unwrap_or("?");
        let context = &container["securityContext"];
        let either = |key: &str| {
            if context[key].is_badvalue() {
                pod_context[key].clone()
            } else {
                context[key].clone()
            }
        };
        if context["privileged"].as_bool() == Some(true) {
            violate(format!("{name}: privileged"));
        }
        if context["allowPrivilegeEscalation"].as_bool() != Some(false) {
            violate(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        if either("runAsNonRoot").as_bool() != Some(true) {
            violate(format!("{name}: runAsNonRoot is not true"));
        }
        if either("runAsUser").as_i64() == Some(0) {
            violate(format!("{name}: runAsUser 0"));
        }
        let seccomp = either("seccompProfile")["type"].clone();
        if !matches!(seccomp.as_str(), Some("RuntimeDefault" | "Localhost")) {
            violate(format!(
                "{name}: seccompProfile is not RuntimeDefault or Localhost"
            ));
        }
        let capabilities = &context["capabilities"];
        let dropped = capabilities["drop"].as_vec().into_iter().flatten();
        if !dropped.clone().any(|c| c.as_str() == Some("ALL")) {
            violate(format!("{name}: capabilities do not drop ALL"));
        }
        for added in capabilities["add"].as_vec().into_iter().flatten() {
            if added.as_str() != Some("NET_BIND_SERVICE") {
                violate(format!("{name}: adds capability {added:?}"));
            }
        }
        for port in container["ports"].as_vec().into_iter().flatten() {
            if port["hostPort"].as_i64().unwrap_or(0) != 0 {
                violate(format!("{name}: hostPort"));
            }
        }
        if !matches!(context["procMount"].as_str(), None | Some("Default")) {
            violate(format!("{name}: procMount"));
        }
    }
    found
}

#[test]
fn the_pods_pass_the_restricted_pod_security_profile() {
    let docs = yaml("kubernetes/streamrec.yaml");
    let pod = &docs[1]["spec"]["template"]["spec"];
    assert_eq!(restricted_violations(pod), Vec::<String>::new());
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true),
        "it writes only to its state volume"
    );
    // The checker itself: a pod as the manifest stood before breaks four controls.
    let bare = &YamlLoader::load_from_str(
        "containers: [{name: c, image: i}]\nsecurityContext: {runAsNonRoot: true}",
    )
    .unwrap()[0];
    assert_eq!(
        restricted_violations(bare).len(),
        3,
        "{:?}",
        restricted_violations(bare)
    );
}

#[test]
fn scrapers_find_every_pod_restoring_ones_included() {
    let docs = yaml("kubernetes/streamrec.yaml");
    let annotations = &docs[1]["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some("9464"));
    let service = &docs[2]["spec"];
    assert_eq!(service["publishNotReadyAddresses"].as_bool(), Some(true));
    let monitor = &yaml("kubernetes/servicemonitor.yaml")[0];
    assert_eq!(monitor["kind"].as_str(), Some("ServiceMonitor"));
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        service["ports"][0]["name"].as_str()
    );
}

/// A panel plots one kind of quantity: its unit matches what its metrics measure.
#[test]
fn every_panel_unit_matches_its_metrics() {
    let text = std::fs::read_to_string(deploy("grafana/streamrec.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        let unit = panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or("");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let measured = if expr.contains("_seconds") {
                "s"
            } else if expr.contains("_bytes") {
                "bytes"
            } else {
                continue;
            };
            assert_eq!(unit, measured, "{:?}: {expr}", panel["title"]);
        }
    }
}
