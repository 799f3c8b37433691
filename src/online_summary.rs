//! The online metrics' summary record (`streamrec.online-metrics.v1`, see
//! `docs/schemas/online-metrics.v1.json`): an instance's counters since its state began, with
//! the rates a dashboard charts. Cumulative, so the latest record per instance (its key) is
//! all a reader needs, and a record lost or read twice changes nothing.

use serde::Serialize;

use crate::online::{OnlineTally, VariantCounts};
use crate::outputs::rfc3339;
use crate::ranking::SOURCES;

pub const ONLINE_METRICS_SCHEMA: &str = "streamrec.online-metrics.v1";

/// What a summary says besides the counters.
pub struct SummaryOf<'a> {
    pub instance_id: &'a str,
    pub now_ms: i64,
    pub horizon_ms: i64,
    pub top_n: usize,
}

#[derive(Serialize)]
struct Summary<'a> {
    schema: &'static str,
    instance_id: &'a str,
    generated_at: String,
    horizon_ms: i64,
    top_n: usize,
    judged_events: u64,
    new_item_events: u64,
    hits: u64,
    hr_at_n: f64,
    mrr_at_n: f64,
    purchases: u64,
    conversions: u64,
    conversion_rate: f64,
    purchase_revenue: f64,
    attributed_revenue: f64,
    impressions: u64,
    impression_clicks: u64,
    click_through_rate: f64,
    sources: Vec<BySource>,
    variants: Vec<ByVariant<'a>>,
}

/// An experiment variant's counts: successes and trials of HR@N and the conversion rate, for
/// a two-proportion test between variants.
#[derive(Serialize)]
struct ByVariant<'a> {
    experiment: &'a str,
    variant: &'a str,
    judged_events: u64,
    new_item_events: u64,
    hits: u64,
    hr_at_n: f64,
    purchases: u64,
    conversions: u64,
    conversion_rate: f64,
    attributed_revenue: f64,
    impressions: u64,
    impression_clicks: u64,
    click_through_rate: f64,
}

impl<'a> ByVariant<'a> {
    fn of(v: &'a VariantCounts) -> ByVariant<'a> {
        let c = &v.counts;
        ByVariant {
            experiment: &v.experiment,
            variant: &v.variant,
            judged_events: c.judged,
            new_item_events: c.new_item_events,
            hits: c.hits,
            hr_at_n: c.hit_rate(),
            purchases: c.purchases,
            conversions: c.conversions,
            conversion_rate: c.conversion_rate(),
            attributed_revenue: c.attributed_revenue,
            impressions: c.impressions,
            impression_clicks: c.impression_clicks,
            click_through_rate: c.click_through_rate(),
        }
    }
}

#[derive(Serialize)]
struct BySource {
    source: &'static str,
    hits: u64,
    conversions: u64,
}

pub fn online_metrics_json(of: &SummaryOf<'_>, tally: &OnlineTally) -> Vec<u8> {
    let counts = &tally.total;
    let sources = SOURCES.iter().enumerate().map(|(bit, source)| BySource {
        source: source.as_str(),
        hits: counts.hits_by_source[bit],
        conversions: counts.conversions_by_source[bit],
    });
    let summary = Summary {
        schema: ONLINE_METRICS_SCHEMA,
        instance_id: of.instance_id,
        generated_at: rfc3339(of.now_ms),
        horizon_ms: of.horizon_ms,
        top_n: of.top_n,
        judged_events: counts.judged,
        new_item_events: counts.new_item_events,
        hits: counts.hits,
        hr_at_n: counts.hit_rate(),
        mrr_at_n: counts.mrr(),
        purchases: counts.purchases,
        conversions: counts.conversions,
        conversion_rate: counts.conversion_rate(),
        purchase_revenue: counts.purchase_revenue,
        attributed_revenue: counts.attributed_revenue,
        impressions: counts.impressions,
        impression_clicks: counts.impression_clicks,
        click_through_rate: counts.click_through_rate(),
        sources: sources.collect(),
        variants: tally.variants.iter().map(ByVariant::of).collect(),
    };
    serde_json::to_vec(&summary).expect("plain structs serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::online::OnlineCounts;

    fn schema() -> jsonschema::Validator {
        let text = include_str!("../docs/schemas/online-metrics.v1.json");
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        jsonschema::options()
            .should_validate_formats(true)
            .build(&value)
            .unwrap()
    }

    fn summary(counts: &OnlineCounts) -> serde_json::Value {
        let tally = OnlineTally {
            total: counts.clone(),
            variants: vec![VariantCounts {
                experiment: "blend".into(),
                variant: "b".into(),
                counts: counts.clone(),
            }],
        };
        let of = SummaryOf {
            instance_id: "a",
            now_ms: 1_700_000_000_000,
            horizon_ms: 3_600_000,
            top_n: 10,
        };
        serde_json::from_slice(&online_metrics_json(&of, &tally)).unwrap()
    }

    #[test]
    fn summaries_validate_against_the_schema_with_and_without_counts() {
        let mut counts = OnlineCounts {
            judged: 10,
            new_item_events: 8,
            hits: 2,
            reciprocal_rank: 1.5,
            purchases: 3,
            conversions: 1,
            purchase_revenue: 90.0,
            attributed_revenue: 30.0,
            impressions: 40,
            impression_clicks: 6,
            ..OnlineCounts::default()
        };
        counts.hits_by_source[1] = 2;
        for counts in [OnlineCounts::default(), counts] {
            let value = summary(&counts);
            if let Err(err) = schema().validate(&value) {
                panic!("{err}\n{value}");
            }
        }
    }

    #[test]
    fn rates_come_from_the_counts_and_every_source_is_listed() {
        let counts = OnlineCounts {
            new_item_events: 8,
            hits: 2,
            purchases: 4,
            conversions: 1,
            ..OnlineCounts::default()
        };
        let value = summary(&counts);
        assert_eq!(value["hr_at_n"], 0.25);
        assert_eq!(value["conversion_rate"], 0.25);
        assert_eq!(value["sources"].as_array().unwrap().len(), SOURCES.len());
        assert_eq!(value["sources"][1]["source"], "cooc");
        let variant = &value["variants"][0];
        assert_eq!(
            (&variant["experiment"], &variant["variant"]),
            (&"blend".into(), &"b".into())
        );
        assert_eq!(
            (&variant["hits"], &variant["new_item_events"]),
            (&2.into(), &8.into())
        );
        assert_eq!(variant["hr_at_n"], 0.25);
    }
}
