//! Content-based candidates: items sharing the catalog attributes (category, brand, tags) of
//! the user's recent items, weighted by the user's interest in those items. Each attribute
//! offers its most popular items and its newest listings, so an item nobody has touched yet
//! can be recommended to the users whose taste it matches.

use super::{relative_popularity, Candidates, Source};
use crate::config::{EngineConfig, RankingConfig};
use crate::state::{ItemModel, UserState};

/// A newest listing counts as much as the least popular of the attribute's popular items.
const NEW_LISTING_SHARE: f32 = 0.5;

/// Attributes a user past the cold start gathers new listings from: their history and its
/// neighbours already cover the rest, and this runs on every request.
const WARM_TASTE_ATTRIBUTES: usize = 3;

pub(super) fn gather(
    candidates: &mut Candidates,
    items: &ItemModel,
    (user, now_ms): (&UserState, i64),
    (config, ranking): (&EngineConfig, &RankingConfig),
) {
    let cold = user.profile.events() <= config.content.cold_user_events;
    let seeds = ranking.seed_items;
    let mut taste = taste(items, (user, now_ms), config, seeds);
    if !cold {
        taste.truncate(WARM_TASTE_ATTRIBUTES);
    }
    for (attribute, weight) in taste {
        let popular: &[u32] = if cold {
            items.catalog.popular_with(attribute)
        } else {
            &[]
        };
        for (item, relative) in relative_popularity(items, popular) {
            let share = NEW_LISTING_SHARE + (1.0 - NEW_LISTING_SHARE) * relative;
            candidates.add(item, Source::Content, weight * share);
        }
        for item in items.catalog.newest_with(attribute) {
            if !popular.contains(&item) {
                candidates.add(item, Source::Content, weight * NEW_LISTING_SHARE);
            }
        }
    }
}

/// The user's strongest attributes: the decayed interest in each of their latest items (as many
/// as seed neighbours), summed per attribute.
fn taste(
    items: &ItemModel,
    (user, now): (&UserState, i64),
    config: &EngineConfig,
    seeds: usize,
) -> Vec<(u32, f32)> {
    let half_life = config.profile.half_life_ms;
    let mut taste: Vec<(u32, f32)> = Vec::new();
    let latest = user.profile.recent.iter().rev();
    for recent in latest.take(seeds) {
        let interest = recent.interest.value_at(now, half_life);
        for &attribute in items.catalog.attributes_of(recent.item) {
            match taste.iter_mut().find(|t| t.0 == attribute) {
                Some(t) => t.1 += interest,
                None => taste.push((attribute, interest)),
            }
        }
    }
    taste.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    taste.truncate(config.content.taste_attributes);
    taste
}
