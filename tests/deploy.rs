//! The deployment files under `deploy/`: no container runs on these machines, so what can be
//! checked here is checked — every manifest parses and holds what the docs promise, the
//! Dockerfile builds the way CI does, the dashboard queries only metrics `run` exports, and the
//! systemd unit passes `systemd-analyze verify` where that tool exists.

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
    let config = docs[0]["data"]["streamrec.toml"].as_str().unwrap();
    let env = &container["env"];
    let instance_from_pod = env
        .as_vec()
        .unwrap()
        .iter()
        .any(|e| e["name"].as_str() == Some("STREAMREC__KAFKA__INSTANCE_ID"));
    assert!(instance_from_pod, "each pod names itself");
    // What the pod's environment adds.
    let config = config.replace("[kafka]\n", "[kafka]\ninstance_id = \"streamrec-0\"\n");
    streamrec::config::Config::parse(&config).expect("the ConfigMap's config is valid");
}

#[test]
fn compose_runs_kafka_in_kraft_mode_streamrec_and_prometheus() {
    let compose = &yaml("docker-compose.yml")[0];
    let services = compose["services"].as_hash().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(names, ["kafka", "streamrec", "prometheus"]);
    let kafka = &compose["services"]["kafka"]["environment"];
    assert_eq!(
        kafka["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller")
    );
    let prometheus = &yaml("prometheus.yml")[0];
    assert_eq!(
        prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0].as_str(),
        Some("streamrec:9464")
    );
}

#[test]
fn the_dockerfile_builds_like_ci_and_runs_as_a_non_root_user() {
    let text = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    assert!(text.contains("RUN cargo build --release --locked"));
    assert!(text.contains("USER streamrec"));
    assert!(text.contains("VOLUME [\"/var/lib/streamrec\"]"));
    let manifest = std::fs::read_to_string(deploy("../Cargo.toml")).unwrap();
    let floor = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        text.contains(&format!("FROM rust:{floor}-")),
        "the build image is the toolchain floor {floor}"
    );
}

#[test]
fn the_dashboard_queries_only_metrics_run_exports() {
    let text = std::fs::read_to_string(deploy("grafana/streamrec.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let metrics = streamrec::admin::Metrics::new([
        "r".into(),
        "s".into(),
        "d".into(),
        "t".into(),
        "m".into(),
    ]);
    let exported = metrics.families();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("streamrec_"))
            {
                let family = name.trim_end_matches("_bucket").trim_end_matches("_total");
                assert!(
                    exported.iter().any(|f| f == family),
                    "{name} in {:?} is not exported",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 10);
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
