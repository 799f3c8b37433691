//! Online metrics in `/metrics` (see `online`): counters that grow as the workers' engines
//! judge their users' events against what the users were last shown. They start from what the
//! state restored, so they count since the state began, not since the process did.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::families::add;
use crate::online::{OnlineCounts, OnlineTally};
use crate::ranking::SOURCES;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

type Revenue = Counter<f64, std::sync::atomic::AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantLabel {
    pub experiment: String,
    pub variant: String,
}

type ByVariant<M> = Family<VariantLabel, M>;

/// Each experiment variant's share of the online counters: what a significance test needs.
#[derive(Clone, Debug, Default)]
struct VariantMetrics {
    judged: ByVariant<Counter>,
    new_item_events: ByVariant<Counter>,
    hits: ByVariant<Counter>,
    purchases: ByVariant<Counter>,
    conversions: ByVariant<Counter>,
    attributed_revenue: ByVariant<Revenue>,
    impressions: ByVariant<Counter>,
    impression_clicks: ByVariant<Counter>,
}

#[derive(Clone, Debug, Default)]
pub struct OnlineMetrics {
    variants: VariantMetrics,
    judged: Counter,
    new_item_events: Counter,
    hits: Counter,
    reciprocal_rank: Revenue,
    source_hits: Family<SourceLabel, Counter>,
    purchases: Counter,
    purchase_revenue: Revenue,
    conversions: Counter,
    attributed_revenue: Revenue,
    source_conversions: Family<SourceLabel, Counter>,
    impressions: Counter,
    impression_clicks: Counter,
}

impl OnlineMetrics {
    /// Registers the families, with a series per experiment variant in `arms` (experiment,
    /// variant); returns their names (as `/metrics` shows them).
    pub fn register(&self, registry: &mut Registry, arms: &[(String, String)]) -> Vec<String> {
        // Every source's series from the start: parsers drop families without samples.
        for source in SOURCES.map(|s| s.as_str()) {
            let _ = self.source_hits.get_or_create(&SourceLabel { source });
            let _ = self
                .source_conversions
                .get_or_create(&SourceLabel { source });
        }
        let mut names = Vec::new();
        let mut to = (registry, &mut names);
        let help = "Events of users whose last list was shown within engine.online.horizon_ms";
        add(&mut to, "online_judged_events", help, &self.judged);
        let help = "Judged events on items new to the user: online HR@N's test cases";
        add(
            &mut to,
            "online_new_item_events",
            help,
            &self.new_item_events,
        );
        let help = "Judged events on items new to the user that were in the list shown";
        add(&mut to, "online_hits", help, &self.hits);
        let help = "Sum of 1/rank over the hits (MRR: this over the new-item events)";
        add(
            &mut to,
            "online_reciprocal_rank",
            help,
            &self.reciprocal_rank,
        );
        let help = "Hits by a source that proposed the item (an item can have several)";
        add(&mut to, "online_source_hits", help, &self.source_hits);
        let help = "Judged purchases";
        add(&mut to, "online_purchases", help, &self.purchases);
        let help = "What judged purchases were worth (price x quantity)";
        add(
            &mut to,
            "online_purchase_revenue",
            help,
            &self.purchase_revenue,
        );
        let help = "Judged purchases of an item in the list shown or engaged within the horizon";
        add(&mut to, "online_conversions", help, &self.conversions);
        let help = "What the conversions were worth (price x quantity)";
        add(
            &mut to,
            "online_attributed_revenue",
            help,
            &self.attributed_revenue,
        );
        let help = "Conversions by a source that proposed the item";
        add(
            &mut to,
            "online_source_conversions",
            help,
            &self.source_conversions,
        );
        let help = "Items shown by impression events (of items the model knows)";
        add(&mut to, "online_impressions", help, &self.impressions);
        let help = "Impressed items the user then touched within the horizon, once per impression";
        add(
            &mut to,
            "online_impression_clicks",
            help,
            &self.impression_clicks,
        );
        if !arms.is_empty() {
            self.variants.register(&mut to, arms);
        }
        names
    }

    /// Adds what the tallies grew by since `seen`.
    pub fn record(&self, total: &OnlineTally, seen: &OnlineTally) {
        self.record_total(&total.total, &seen.total);
        let none = OnlineCounts::default();
        for (arm, now) in total.variants.iter().enumerate() {
            let before = seen.variants.get(arm).map_or(&none, |v| &v.counts);
            let label = VariantLabel {
                experiment: now.experiment.clone(),
                variant: now.variant.clone(),
            };
            self.variants.record(&label, &now.counts, before);
        }
    }

    fn record_total(&self, total: &OnlineCounts, seen: &OnlineCounts) {
        self.judged.inc_by(total.judged - seen.judged);
        (self.new_item_events).inc_by(total.new_item_events - seen.new_item_events);
        self.hits.inc_by(total.hits - seen.hits);
        (self.reciprocal_rank).inc_by((total.reciprocal_rank - seen.reciprocal_rank).max(0.0));
        self.purchases.inc_by(total.purchases - seen.purchases);
        (self.purchase_revenue).inc_by((total.purchase_revenue - seen.purchase_revenue).max(0.0));
        self.conversions
            .inc_by(total.conversions - seen.conversions);
        (self.attributed_revenue)
            .inc_by((total.attributed_revenue - seen.attributed_revenue).max(0.0));
        self.impressions
            .inc_by(total.impressions.saturating_sub(seen.impressions));
        (self.impression_clicks).inc_by(
            total
                .impression_clicks
                .saturating_sub(seen.impression_clicks),
        );
        for (bit, source) in SOURCES.iter().enumerate() {
            let label = SourceLabel {
                source: source.as_str(),
            };
            let hits = total.hits_by_source[bit] - seen.hits_by_source[bit];
            self.source_hits.get_or_create(&label).inc_by(hits);
            let converted = total.conversions_by_source[bit] - seen.conversions_by_source[bit];
            self.source_conversions
                .get_or_create(&label)
                .inc_by(converted);
        }
    }
}

impl VariantMetrics {
    fn register(&self, to: &mut crate::families::Families<'_>, arms: &[(String, String)]) {
        for (experiment, variant) in arms {
            let label = VariantLabel {
                experiment: experiment.clone(),
                variant: variant.clone(),
            };
            let _ = self.judged.get_or_create(&label);
            let _ = self.new_item_events.get_or_create(&label);
            let _ = self.hits.get_or_create(&label);
            let _ = self.purchases.get_or_create(&label);
            let _ = self.conversions.get_or_create(&label);
            let _ = self.attributed_revenue.get_or_create(&label);
            let _ = self.impressions.get_or_create(&label);
            let _ = self.impression_clicks.get_or_create(&label);
        }
        let help = "Judged events of the variant's users";
        add(to, "online_variant_judged_events", help, &self.judged);
        let help = "Judged events on items new to the variant's users (HR@N's trials)";
        add(
            to,
            "online_variant_new_item_events",
            help,
            &self.new_item_events,
        );
        let help = "Those whose item was in the list shown (HR@N's successes)";
        add(to, "online_variant_hits", help, &self.hits);
        let help = "Judged purchases of the variant's users (conversion rate's trials)";
        add(to, "online_variant_purchases", help, &self.purchases);
        let help = "Judged purchases of an item shown or engaged (conversion rate's successes)";
        add(to, "online_variant_conversions", help, &self.conversions);
        let help = "What the variant's conversions were worth (price x quantity)";
        add(
            to,
            "online_variant_attributed_revenue",
            help,
            &self.attributed_revenue,
        );
        let help = "Items shown to the variant's users by impression events (CTR's trials)";
        add(to, "online_variant_impressions", help, &self.impressions);
        let help = "Impressed items the variant's users then touched (CTR's successes)";
        add(
            to,
            "online_variant_impression_clicks",
            help,
            &self.impression_clicks,
        );
    }

    fn record(&self, label: &VariantLabel, now: &OnlineCounts, before: &OnlineCounts) {
        let grew = |a: u64, b: u64| a.saturating_sub(b);
        (self.judged.get_or_create(label)).inc_by(grew(now.judged, before.judged));
        (self.new_item_events.get_or_create(label))
            .inc_by(grew(now.new_item_events, before.new_item_events));
        (self.hits.get_or_create(label)).inc_by(grew(now.hits, before.hits));
        (self.purchases.get_or_create(label)).inc_by(grew(now.purchases, before.purchases));
        (self.conversions.get_or_create(label)).inc_by(grew(now.conversions, before.conversions));
        let revenue = (now.attributed_revenue - before.attributed_revenue).max(0.0);
        self.attributed_revenue.get_or_create(label).inc_by(revenue);
        let shown = grew(now.impressions, before.impressions);
        self.impressions.get_or_create(label).inc_by(shown);
        let clicks = grew(now.impression_clicks, before.impression_clicks);
        self.impression_clicks.get_or_create(label).inc_by(clicks);
    }
}
