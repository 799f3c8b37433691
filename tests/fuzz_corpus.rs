//! Every seed of the fuzz corpus (`fuzz/seeds/<target>`) and every input that once crashed a
//! target (`fuzz/regressions/<target>`) runs through the target's entry point on each test run.
//! `STREAMREC_WRITE_SEEDS=1 cargo test --test fuzz_corpus` rewrites the binary seeds from a real
//! engine (after a format change).

use std::path::{Path, PathBuf};

use streamrec::fuzzing;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("clean_input", fuzzing::clean_input),
    ("clean_catalog", fuzzing::clean_catalog),
    ("state_records", fuzzing::state_records),
    ("changelog_record", fuzzing::changelog_record),
    ("model_update", fuzzing::model_update),
    ("item_records", fuzzing::item_records),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_past_crash_runs_clean() {
    if std::env::var_os("STREAMREC_WRITE_SEEDS").is_some() {
        write_binary_seeds();
    }
    for (name, target) in TARGETS {
        let seeds = files(&fuzz_dir().join("seeds").join(name));
        assert!(!seeds.is_empty(), "{name} has no seed corpus");
        for path in seeds
            .iter()
            .chain(&files(&fuzz_dir().join("regressions").join(name)))
        {
            let data = std::fs::read(path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} panicked on {}", path.display());
        }
    }
}

fn write_binary_seeds() {
    let (engine, updates) = fuzzing::template_engine_and_updates();
    let records = engine.to_records();
    write_seed("state_records", "shard", &records.shards[0]);
    write_seed("state_records", "user", &records.users[0].1);
    write_seed("state_records", "item", &records.item_records[1].1);
    let portable = engine.changed_portable_users();
    write_seed("changelog_record", "user", &portable[0].1.encode());
    // `user_waiting` is the bare trigger tail the build before sections wrote: kept as it is.
    write_seed(
        "changelog_record",
        "user_sections",
        &waiting_user().encode(),
    );
    write_seed("changelog_record", "dedup", &carried_keys().encode());
    write_seed(
        "changelog_record",
        "position",
        br#"{"next_offset":42,"stream_time_ms":1700000000000}"#,
    );
    let learned = streamrec::engine::ReplicaUpdate::Learned(updates[updates.len() - 1].clone());
    write_seed(
        "model_update",
        "learned",
        &streamrec::pipeline::encode_update(&learned),
    );
    let (batch, publication) = fuzzing::item_records_seeds();
    write_seed("item_records", "work_batch", &batch.encode());
    write_seed("item_records", "publication", &publication.encode());
}

/// Two keys of a partition, as a checkpoint writes them after the partition's position.
fn carried_keys() -> streamrec::kafka::CarriedKeys {
    let keys = [(1, 1_700_000_000_000), (u128::MAX, 1_700_000_000_500)];
    streamrec::kafka::CarriedKeys {
        next_offset: 42,
        keys: keys
            .map(|(key, ts_ms)| streamrec::dedup::CarriedKey { key, ts_ms })
            .to_vec(),
    }
}

/// A user with a browse and a cart abandonment waiting under the shipped rules, an item
/// dismissed, one impressed and a list shown: a record with all three tail sections.
fn waiting_user() -> streamrec::engine::PortableUser {
    use streamrec::event::{Event, EventType, Feedback, FeedbackKind};
    let mut engine = streamrec::engine::Engine::new(Default::default());
    engine.set_trigger_rules(fuzzing::shipped_trigger_rules());
    let t0 = 1_700_000_000_000;
    for n in 0..3 {
        engine.apply(&Event::new(EventType::View, "u", "i1", t0 + n));
    }
    engine.apply(&Event::new(EventType::AddToCart, "u", "i2", t0 + 10));
    let feedback = |ts_ms, kind| Feedback {
        user_id: "u".into(),
        ts_ms,
        kind,
    };
    let dismiss = FeedbackKind::Dismiss {
        item_id: "i1".into(),
        category: true,
    };
    engine.apply_feedback(&feedback(t0 + 11, dismiss));
    let shown = FeedbackKind::Impression {
        item_ids: vec!["i2".into()],
    };
    engine.apply_feedback(&feedback(t0 + 12, shown));
    let list = engine.recommend("u", 10, &Default::default());
    engine.show("u", &list);
    let (_, user) = engine.changed_portable_users().remove(0);
    assert!(!user.triggers.is_empty() && !user.feedback.is_empty() && user.shown.is_some());
    user
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = fuzz_dir().join("seeds").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}
