//! Prequential (test-then-learn) evaluation over a time-sorted event log.
//!
//! Every event is first a possible test case, then learned. `discovery`: the user has an earlier
//! event and never touched the item; everything they touched is excluded from the list.
//! `purchase`: a purchase by a user with an earlier event; the engine excludes what it always
//! does (items the user bought, unless buyers re-buy in their category: see `rebuy`).
//! All methods share one engine (learning is identical); they differ only in the ranking blend.

use std::time::{Duration, Instant};

use rustc_hash::FxHashSet;
use serde::Serialize;

use crate::catalog::CatalogUpdate;
use crate::config::{Blend, EngineConfig, RankingConfig};

mod instances;
mod numbered;

use crate::engine::{Applied, Engine};
use crate::event::{Event, EventType};
use crate::experiments::{Treatment, Variant};
use crate::online::{ratio, OnlineCounts, VariantCounts};
use crate::ranking::Filters;
use instances::Instances;
pub use instances::Topology;
use numbered::{KnownItems, Numbered, Recommended};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Discovery,
    Purchase,
}

/// A named ranking to score.
#[derive(Clone, Debug)]
pub struct Method {
    pub name: String,
    pub treatment: Treatment,
}

impl Method {
    fn with_blend(name: &str, base: &RankingConfig, blend: Blend) -> Method {
        Method {
            name: name.to_owned(),
            treatment: Treatment::base(&RankingConfig {
                blend,
                ..base.clone()
            }),
        }
    }
}

fn only(f: impl FnOnce(&mut Blend)) -> Blend {
    let mut blend = Blend {
        history: 0.0,
        cooc: 0.0,
        cross: 0.0,
        mf: 0.0,
        popular: 0.0,
        content: 0.0,
        segment: 0.0,
    };
    f(&mut blend);
    blend
}

/// One method per variant of the experiment `name`, each ranking every user as that variant
/// does (the base ranking with its overrides); None when no experiment has that name.
pub fn experiment_methods(config: &EngineConfig, name: &str) -> Option<Vec<Method>> {
    let experiment = config.experiments.iter().find(|e| e.name == name)?;
    let method = |variant: &Variant| {
        let mut treatment = Treatment::base(&config.ranking);
        variant.apply(&mut treatment);
        Method {
            name: variant.name.clone(),
            treatment,
        }
    };
    Some(experiment.variants.iter().map(method).collect())
}

/// Single-source baselines, the configured hybrid, and the hybrid without each source.
pub fn standard_methods(base: &RankingConfig) -> Vec<Method> {
    let hybrid = &base.blend;
    let method = |name: &str, blend: Blend| Method::with_blend(name, base, blend);
    let mut methods = vec![
        method("popularity", only(|b| b.popular = 1.0)),
        method("history", only(|b| b.history = 1.0)),
        method("cooc", only(|b| b.cooc = 1.0)),
        method("mf", only(|b| b.mf = 1.0)),
        method("content", only(|b| b.content = 1.0)),
        method("hybrid", hybrid.clone()),
    ];
    type Strip = fn(&mut Blend);
    let ablations: [(&str, Strip); 6] = [
        ("hybrid-no-history", |b| b.history = 0.0),
        ("hybrid-no-cooc", |b| b.cooc = 0.0),
        ("hybrid-no-cross", |b| b.cross = 0.0),
        ("hybrid-no-mf", |b| b.mf = 0.0),
        ("hybrid-no-popular", |b| b.popular = 0.0),
        ("hybrid-no-content", |b| b.content = 0.0),
    ];
    for (name, strip) in ablations {
        let mut blend = hybrid.clone();
        strip(&mut blend);
        if blend != *hybrid {
            methods.push(method(name, blend));
        }
    }
    methods
}

#[derive(Clone, Debug, Serialize)]
pub struct MethodReport {
    pub method: String,
    pub hr_at_n: f64,
    pub mrr_at_n: f64,
    pub tests: u64,
    pub hits: u64,
    /// Distinct items recommended over all test cases / distinct items in the log.
    pub coverage: f64,
    /// Events / (time learning + time ranking for this method).
    pub events_per_s: f64,
    /// HR@N on the cold-start slice: test cases whose user had fewer than `COLD_EVENTS` events.
    pub cold_hr_at_n: f64,
    pub cold_hits: u64,
    /// HR@N of the test cases in the first half of the log's events, then the last half: a
    /// setting tuned to one half and worse on the other is tuned to the test.
    pub halves_hr_at_n: [f64; 2],
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub mode: Mode,
    pub top_n: usize,
    pub events: usize,
    pub users: usize,
    pub items: usize,
    pub tests: u64,
    pub instances: usize,
    pub topology: Topology,
    pub sync_every: usize,
    pub significance: f32,
    /// Owned: records and bytes of item-side work per event, in one batch per item partition
    /// (of `instances::ITEM_PARTITIONS`) at each sync.
    pub work_records_per_event: f64,
    pub work_bytes_per_event: f64,
    /// Owned: read-model records per event and their bytes: views (one per item changed since
    /// the last sync) and lists (of those whose lists' members changed).
    pub view_records_per_event: f64,
    pub view_bytes_per_event: f64,
    pub list_records_per_event: f64,
    pub list_bytes_per_event: f64,
    /// Test cases in the cold-start slice.
    pub cold_tests: u64,
    /// Test cases in the first half of the log's events, then the last half.
    pub halves_tests: [u64; 2],
    pub catalog_items: usize,
    /// Events `engine.max_items` refused: their new items were never learned.
    pub refused_by_item_limit: u64,
    pub learn_events_per_s: f64,
    pub bytes_per_user: f64,
    pub bytes_per_item: f64,
    pub methods: Vec<MethodReport>,
    /// With [`Protocol::publish`]: the online metrics of the lists shown.
    pub online: Option<OnlineCounts>,
    /// With [`Protocol::publish`] and experiments configured: each variant's online metrics
    /// (users assigned as `run` assigns them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub online_variants: Vec<VariantCounts>,
}

#[derive(Default)]
struct Tally {
    hits: u64,
    cold_hits: u64,
    halves_hits: [u64; 2],
    reciprocal_rank: f64,
    /// (instance, item index) recommended: replicas index items in their own order.
    recommended: Recommended,
    ranking_time: Duration,
}

#[derive(Default)]
struct UserTrack {
    events: u32,
    touched: FxHashSet<u32>,
    /// `touched` as a list, which ranking walks.
    touched_list: Vec<u32>,
}

/// Users with fewer events than this before a test case make it a cold-start case.
pub const COLD_EVENTS: u32 = 3;

/// How test cases are made and scored.
#[derive(Clone, Copy, Debug)]
pub struct Protocol {
    pub mode: Mode,
    pub top_n: usize,
    /// Instances simulated (users partitioned by hash); 1 replicated: one engine.
    pub instances: usize,
    /// How the instances share the item side.
    pub topology: Topology,
    /// Replicated: item-model updates reach the other replicas every this many events. Owned:
    /// item-side work reaches the owners, and their state the read model, every this many.
    pub sync_every: usize,
    /// Owned: an item's view waits until it moved by more than this share (see `ItemOwner`).
    pub significance: f32,
    /// Also show each user, after each of their events, the list `run` would publish then
    /// (the configured blend, `exclude_seen` as given), and report the online metrics of
    /// their next events judged against it (see `online`).
    pub publish: Option<Publish>,
}

/// How `run` publishes, for [`Protocol::publish`].
#[derive(Clone, Copy, Debug)]
pub struct Publish {
    pub exclude_seen: bool,
}

impl Protocol {
    pub fn new(mode: Mode, top_n: usize) -> Protocol {
        Protocol {
            mode,
            top_n,
            instances: 1,
            topology: Topology::Replicated,
            sync_every: 1,
            significance: 0.0,
            publish: None,
        }
    }
}

/// Applies the catalog, sorts events by time (stable: file order breaks ties), then tests and
/// learns every event in order (each on the instance that owns its user).
pub fn evaluate(
    events: Vec<Event>,
    catalog: &[CatalogUpdate],
    protocol: &Protocol,
    config: &EngineConfig,
    methods: &[Method],
) -> EvalReport {
    let Protocol { mode, top_n, .. } = *protocol;
    let events = in_time_order(events);
    let shape = (protocol.instances, protocol.topology);
    let mut instances = Instances::new(shape, protocol.sync_every, config);
    instances.set_significance(protocol.significance);
    for update in catalog {
        instances.apply_catalog(update);
    }
    let numbered = Numbered::new(&events, &instances);
    let mut tracks: Vec<UserTrack> = Vec::new();
    tracks.resize_with(numbered.user_count(), UserTrack::default);
    let mut known = KnownItems::new(instances.count(), numbered.item_count);
    let mut tallies: Vec<Tally> = methods.iter().map(|_| Tally::default()).collect();
    let mut tests = 0u64;
    let mut cold_tests = 0u64;
    let mut halves_tests = [0u64; 2];
    let mut learning = Duration::ZERO;
    let mut refused_by_item_limit = 0;
    for (position, event) in events.iter().enumerate() {
        let half = usize::from(position >= events.len() / 2);
        let user = numbered.users[position] as usize;
        let item_number = numbered.items[position];
        let owner = numbered.owners[user];
        let engine = instances.engine(owner);
        let target = known.index((engine, owner), item_number, &event.item_id);
        let track = &mut tracks[user];
        // A user's first event tests nothing: there is nothing to rank from yet.
        if track.events > 0 && is_test_case(mode, event, target, track) {
            tests += 1;
            let cold = track.events < COLD_EVENTS;
            cold_tests += u64::from(cold);
            halves_tests[half] += 1;
            // Purchase mode leaves bought items to the engine, as `run` does.
            let excluded = match mode {
                Mode::Discovery => Some(track.touched_list.as_slice()),
                Mode::Purchase => None,
            };
            let filters = Filters {
                exclude_seen: false,
                exclude_items: excluded,
                ..Filters::default()
            };
            for (method, tally) in methods.iter().zip(tallies.iter_mut()) {
                let hit = score_case(
                    (engine, owner),
                    event,
                    target,
                    top_n,
                    &filters,
                    method,
                    tally,
                );
                tally.cold_hits += u64::from(hit && cold);
                tally.halves_hits[half] += u64::from(hit);
            }
        }
        let started = Instant::now();
        let applied = instances.apply_at(owner, event);
        learning += started.elapsed();
        if applied == Applied::ItemLimit {
            refused_by_item_limit += 1;
            continue; // nothing learned: the item is not known
        }
        if let Some(publish) = protocol.publish {
            let filters = Filters {
                exclude_seen: publish.exclude_seen,
                ..Filters::default()
            };
            instances.show_at(owner, &event.user_id, top_n, &filters);
        }
        let item = target.unwrap_or_else(|| {
            let engine = (instances.engine(owner), owner);
            (known.index(engine, item_number, &event.item_id)).expect("applied items are interned")
        });
        track.events += 1;
        if track.touched.insert(item) {
            track.touched_list.push(item);
        }
    }
    let engine = instances.engine(0);
    let item_count = engine.item_count().max(1) as f64;
    let memory = engine.memory();
    let method_reports = methods
        .iter()
        .zip(tallies)
        .map(|(method, tally)| MethodReport {
            method: method.name.clone(),
            hr_at_n: ratio(tally.hits as f64, tests as f64),
            mrr_at_n: ratio(tally.reciprocal_rank, tests as f64),
            tests,
            hits: tally.hits,
            coverage: instances.distinct_items(tally.recommended.pairs()) as f64 / item_count,
            events_per_s: ratio(
                events.len() as f64,
                (learning + tally.ranking_time).as_secs_f64(),
            ),
            cold_hr_at_n: ratio(tally.cold_hits as f64, cold_tests as f64),
            cold_hits: tally.cold_hits,
            halves_hr_at_n: [0, 1]
                .map(|h| ratio(tally.halves_hits[h] as f64, halves_tests[h] as f64)),
        })
        .collect();
    EvalReport {
        mode,
        top_n,
        events: events.len(),
        users: instances.user_count(),
        items: engine.item_count(),
        tests,
        instances: instances.count(),
        topology: instances.topology(),
        sync_every: protocol.sync_every,
        significance: protocol.significance,
        work_records_per_event: ratio(instances.work_records as f64, events.len() as f64),
        work_bytes_per_event: ratio(instances.work_bytes as f64, events.len() as f64),
        view_records_per_event: ratio(instances.view_records as f64, events.len() as f64),
        view_bytes_per_event: ratio(instances.view_bytes as f64, events.len() as f64),
        list_records_per_event: ratio(instances.list_records as f64, events.len() as f64),
        list_bytes_per_event: ratio(instances.list_bytes as f64, events.len() as f64),
        cold_tests,
        halves_tests,
        catalog_items: catalog.len(),
        refused_by_item_limit,
        learn_events_per_s: ratio(events.len() as f64, learning.as_secs_f64()),
        bytes_per_user: memory.bytes_per_user(),
        bytes_per_item: memory.bytes_per_item(),
        methods: method_reports,
        online: protocol.publish.map(|_| instances.online_tally().total),
        online_variants: match protocol.publish {
            Some(_) => instances.online_tally().variants,
            None => Vec::new(),
        },
    }
}

/// The events sorted by time, stable (file order breaks ties). Sorts `(time, position)` pairs
/// and then moves each event once, rather than moving whole events at every step of the sort.
fn in_time_order(events: Vec<Event>) -> Vec<Event> {
    let mut order: Vec<(i64, usize)> = events.iter().map(|e| e.ts_ms).zip(0..).collect();
    order.sort_unstable();
    let mut events: Vec<Option<Event>> = events.into_iter().map(Some).collect();
    let mut take = |position: usize| events[position].take().expect("each position once");
    order
        .into_iter()
        .map(|(_, position)| take(position))
        .collect()
}

fn is_test_case(mode: Mode, event: &Event, target: Option<u32>, track: &UserTrack) -> bool {
    match mode {
        Mode::Discovery => target.is_none_or(|item| !track.touched.contains(&item)),
        Mode::Purchase => event.kind == EventType::Purchase,
    }
}

fn score_case(
    (engine, instance): (&Engine, usize),
    event: &Event,
    target: Option<u32>,
    top_n: usize,
    filters: &Filters,
    method: &Method,
    tally: &mut Tally,
) -> bool {
    let started = Instant::now();
    let treatment = &method.treatment;
    let filters = treatment.filters(filters);
    let list = engine.recommend_ranked(&event.user_id, top_n, &filters, &treatment.ranking);
    tally.ranking_time += started.elapsed();
    for scored in &list {
        tally.recommended.note(instance, scored.item);
    }
    let Some(rank) = target.and_then(|t| list.iter().position(|s| s.item == t)) else {
        return false;
    };
    tally.hits += 1;
    tally.reciprocal_rank += 1.0 / (rank as f64 + 1.0);
    true
}

impl EvalReport {
    /// A plain-text table for terminals.
    pub fn table(&self) -> String {
        let n = self.top_n;
        let mut out =
            format!(
            "mode {:?}: {} events, {} users, {} items ({} listed in the catalog), {} test cases \
             ({} cold: user had < {COLD_EVENTS} events); learning alone {:.0} events/s; \
             ~{:.0} B/user, ~{:.0} B/item\n",
            self.mode, self.events, self.users, self.items, self.catalog_items, self.tests,
            self.cold_tests, self.learn_events_per_s, self.bytes_per_user, self.bytes_per_item
        );
        if self.refused_by_item_limit > 0 {
            out += &format!(
                "{} events refused by engine.max_items: their new items were never learned\n",
                self.refused_by_item_limit
            );
        }
        match self.topology {
            Topology::Replicated if self.instances > 1 => {
                out += &format!(
                    "{} instances (users by hash), item-model updates delivered every {} events\n",
                    self.instances, self.sync_every
                );
            }
            Topology::Replicated => {}
            Topology::Owned => {
                out += &format!(
                    "{} instance(s) (users by hash), item side owned by item: work delivered to the owners and their state published every {} events (significance {}); {:.3} work records and {:.0} bytes per event, {:.3} item views ({:.0} bytes) and {:.3} neighbour lists ({:.0} bytes) per event\n",
                    self.instances, self.sync_every, self.significance, self.work_records_per_event, self.work_bytes_per_event, self.view_records_per_event, self.view_bytes_per_event, self.list_records_per_event, self.list_bytes_per_event
                );
            }
        }
        out += &format!(
            "{:<20} {:>8} {:>8} {:>9} {:>12} {:>12} {:>9} {:>9}\n",
            "method",
            format!("HR@{n}"),
            format!("MRR@{n}"),
            "coverage",
            "events/s",
            format!("cold HR@{n}"),
            "1st half",
            "2nd half"
        );
        for m in &self.methods {
            let [first, last] = m.halves_hr_at_n;
            out += &format!(
                "{:<20} {:>8.4} {:>8.4} {:>9.3} {:>12.0} {:>12.4} {:>9.4} {:>9.4}\n",
                m.method,
                m.hr_at_n,
                m.mrr_at_n,
                m.coverage,
                m.events_per_s,
                m.cold_hr_at_n,
                first,
                last
            );
        }
        if let Some(online) = &self.online {
            out += &format!(
                "as published after each event (online metrics): HR@{n} {:.4}, MRR@{n} {:.4} over {} events on items new to the user; {} of {} purchases converted\n",
                online.hit_rate(), online.mrr(), online.new_item_events, online.conversions, online.purchases
            );
        }
        for v in &self.online_variants {
            let c = &v.counts;
            out += &format!(
                "  {}/{}: HR@{n} {:.4} over {} events; {} of {} purchases converted\n",
                v.experiment,
                v.variant,
                c.hit_rate(),
                c.new_item_events,
                c.conversions,
                c.purchases
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(user: &str, item: &str, ts: i64) -> Event {
        Event::new(EventType::View, user, item, ts)
    }

    fn report_for(events: Vec<Event>, mode: Mode, top_n: usize) -> EvalReport {
        let config = EngineConfig::default();
        evaluate(
            events,
            &[],
            &Protocol::new(mode, top_n),
            &config,
            &standard_methods(&config.ranking),
        )
    }

    fn method<'a>(report: &'a EvalReport, name: &str) -> &'a MethodReport {
        report.methods.iter().find(|m| m.method == name).unwrap()
    }

    /// Three strangers make C the most popular item; then three users each watch A, then B.
    /// Discovery test cases are the three B events; the first cannot hit (B is unseen), the next
    /// two hit with co-occurrence (A → B) but not with popularity (C outranks B at top-1).
    #[test]
    fn discovery_hits_are_counted_exactly() {
        let mut events = vec![
            view("x1", "C", 100),
            view("x2", "C", 200),
            view("x3", "C", 300),
        ];
        for (n, user) in ["u1", "u2", "u3"].iter().enumerate() {
            let t = 1000 * (n as i64 + 1);
            events.push(view(user, "A", t));
            events.push(view(user, "B", t + 10));
        }
        events.reverse(); // evaluate must sort by time itself
        let report = report_for(events, Mode::Discovery, 1);
        assert_eq!(report.tests, 3);
        let cooc = method(&report, "cooc");
        assert_eq!(cooc.hits, 2);
        assert!((cooc.hr_at_n - 2.0 / 3.0).abs() < 1e-9);
        assert!((cooc.mrr_at_n - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(
            report.halves_tests,
            [0, 3],
            "all B events come after the 4th of 9"
        );
        assert!((cooc.halves_hr_at_n[1] - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(method(&report, "popularity").hits, 0);
    }

    /// With two items allowed, the third's events are refused and counted, and the known
    /// items' events go on being learned and tested.
    #[test]
    fn events_refused_by_the_item_cap_are_counted_and_learn_nothing() {
        let config = EngineConfig {
            max_items: 2,
            ..EngineConfig::default()
        };
        let events = vec![
            view("u1", "A", 1000),
            view("u1", "B", 2000),
            view("u2", "A", 3000),
            view("u2", "C", 4000),
            view("u3", "C", 5000),
            view("u2", "B", 6000),
        ];
        let protocol = Protocol::new(Mode::Discovery, 1);
        let report = evaluate(
            events,
            &[],
            &protocol,
            &config,
            &standard_methods(&config.ranking),
        );
        assert_eq!(report.refused_by_item_limit, 2);
        assert_eq!(report.items, 2);
        assert_eq!(
            method(&report, "cooc").hits,
            1,
            "u2's B after A, learned from u1"
        );
        assert!(report
            .table()
            .contains("2 events refused by engine.max_items"));
    }

    /// A purchase after a view, a cart and another view: history ranks the carted item first.
    #[test]
    fn purchase_mode_tests_only_purchases_and_keeps_viewed_items_eligible() {
        let mut cart = Event::new(EventType::AddToCart, "u", "X", 2);
        cart.category = Some("c".into());
        let events = vec![
            view("u", "X", 1),
            cart,
            view("u", "Y", 3),
            Event::new(EventType::Purchase, "u", "X", 4),
            Event::new(EventType::Purchase, "v", "X", 5),
        ];
        let report = report_for(events, Mode::Purchase, 1);
        assert_eq!(report.tests, 1, "v's purchase is their first event");
        let history = method(&report, "history");
        assert_eq!(history.hits, 1);
        assert_eq!(history.mrr_at_n, 1.0);
    }

    #[test]
    fn ties_in_time_keep_file_order() {
        // Same timestamp: the view comes first in the file, so the purchase has an earlier event
        // and is a test case; in the other order it would not be.
        let purchase = |user| Event::new(EventType::Purchase, user, "X", 5);
        let in_order = report_for(vec![view("u", "X", 5), purchase("u")], Mode::Purchase, 10);
        assert_eq!(in_order.tests, 1);
        let reversed = report_for(vec![purchase("u"), view("u", "X", 5)], Mode::Purchase, 10);
        assert_eq!(reversed.tests, 0);
    }

    #[test]
    fn events_are_put_in_time_order_ties_as_they_came() {
        let times = [7, 3, 7, 1, 3, 7];
        let events = times.iter().enumerate();
        let events = events
            .map(|(i, &ts)| view("u", &i.to_string(), ts))
            .collect();
        let sorted: Vec<String> = in_time_order(events)
            .into_iter()
            .map(|e| e.item_id)
            .collect();
        assert_eq!(sorted, ["3", "1", "4", "0", "2", "5"]);
    }
}
