//! Online metrics in `/metrics` (see `online`): counters that grow as the workers' engines
//! judge their users' events against what the users were last shown. They start from what the
//! state restored, so they count since the state began, not since the process did.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::families::add;
use crate::online::OnlineCounts;
use crate::ranking::SOURCES;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

type Revenue = Counter<f64, std::sync::atomic::AtomicU64>;

#[derive(Clone, Debug, Default)]
pub struct OnlineMetrics {
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
}

impl OnlineMetrics {
    /// Registers the families; returns their names (as `/metrics` shows them).
    pub fn register(&self, registry: &mut Registry) -> Vec<String> {
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
        names
    }

    /// Adds what the totals grew by since `seen`.
    pub fn record(&self, total: &OnlineCounts, seen: &OnlineCounts) {
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
