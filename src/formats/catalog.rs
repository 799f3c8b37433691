//! Catalog files: `streamrec.item.v1` JSON lines (what the catalog topic carries) and MovieLens
//! `movies.csv` (genres as category and tags), plus a catalog derived from an interaction log's
//! categories (Taobao). Bad rows are skipped and counted, as with events.

use std::collections::BTreeMap;
use std::path::Path;

use crate::catalog::{CatalogItem, CatalogUpdate};
use crate::clean::Cleaner;
use crate::config::CleanConfig;
use crate::event::Event;
use crate::formats::EXAMPLES_KEPT;

/// Listings read from a file plus what was skipped, by reason.
#[derive(Clone, Debug, Default)]
pub struct LoadedCatalog {
    pub updates: Vec<CatalogUpdate>,
    pub skipped: BTreeMap<String, usize>,
    /// The first few skipped lines: `line N: code: detail`, as event files report them.
    pub examples: Vec<String>,
}

/// Reads `movies.csv` (by its header) or item.v1 JSON lines.
pub fn load_catalog(path: &Path, clean: &CleanConfig) -> std::io::Result<LoadedCatalog> {
    let text = std::fs::read_to_string(path)?;
    Ok(if text.starts_with("movieId,title,genres") {
        movielens_movies(&text)
    } else {
        item_lines(&text, clean)
    })
}

fn item_lines(text: &str, clean: &CleanConfig) -> LoadedCatalog {
    let cleaner = Cleaner::new(clean.clone());
    let mut loaded = LoadedCatalog::default();
    let lines = text.lines().enumerate();
    for (number, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        match cleaner.clean_catalog(Some(line.as_bytes()), None) {
            Ok(update) => loaded.updates.push(update),
            Err(rejection) => {
                let code = rejection.reason.code();
                if loaded.examples.len() < EXAMPLES_KEPT {
                    let detail = &rejection.detail;
                    let example = format!("line {}: {code}: {detail}", number + 1);
                    loaded.examples.push(example);
                }
                *loaded.skipped.entry(code).or_default() += 1;
            }
        }
    }
    loaded
}

/// `movieId,title,genres`: the first genre is the category, every genre a tag. Titles may be
/// quoted and hold commas, so the id is what precedes the first comma and the genres what
/// follows the last.
fn movielens_movies(text: &str) -> LoadedCatalog {
    let mut loaded = LoadedCatalog::default();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let (Some((id, _)), Some((_, genres))) = (line.split_once(','), line.rsplit_once(','))
        else {
            *loaded.skipped.entry("bad_row".into()).or_default() += 1;
            continue;
        };
        let tags: Vec<String> = genres
            .trim()
            .split('|')
            .filter(|g| !g.is_empty() && *g != "(no genres listed)")
            .map(str::to_owned)
            .collect();
        loaded.updates.push(listing(
            id.trim(),
            tags.first().map_or("none", String::as_str),
            tags.clone(),
        ));
    }
    loaded
}

/// One listing per item of the log, with the first category its events carry.
pub fn catalog_from_events(events: &[Event]) -> Vec<CatalogUpdate> {
    let mut categories: BTreeMap<&str, &str> = BTreeMap::new();
    for event in events {
        if let Some(category) = event.category.as_deref() {
            categories.entry(&event.item_id).or_insert(category);
        }
    }
    categories
        .into_iter()
        .map(|(item, category)| listing(item, category, Vec::new()))
        .collect()
}

fn listing(item_id: &str, category: &str, tags: Vec<String>) -> CatalogUpdate {
    CatalogUpdate::Upsert(CatalogItem {
        item_id: item_id.to_owned(),
        category: category.to_owned(),
        price: 0.0,
        in_stock: true,
        brand: None,
        tags,
        updated_at_ms: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn movies_csv_gives_genres_as_category_and_tags() {
        let text = "movieId,title,genres\n11,\"American President, The (1995)\",Comedy|Drama\n\
                    12,Nothing (2000),(no genres listed)\n";
        let loaded = movielens_movies(text);
        let CatalogUpdate::Upsert(first) = &loaded.updates[0] else {
            panic!()
        };
        assert_eq!(
            (first.item_id.as_str(), first.category.as_str()),
            ("11", "Comedy")
        );
        assert_eq!(first.tags, ["Comedy", "Drama"]);
        let CatalogUpdate::Upsert(second) = &loaded.updates[1] else {
            panic!()
        };
        assert_eq!(second.category, "none");
    }

    #[test]
    fn item_lines_are_cleaned_and_bad_ones_counted() {
        let text = r#"{"schema":"streamrec.item.v1","item_id":"a","category":"c","price":1,"in_stock":true,"updated_at":1}
{"schema":"streamrec.item.v1","item_id":"b","category":"c","price":-1,"in_stock":true,"updated_at":1}
"#;
        let loaded = item_lines(text, &CleanConfig::default());
        assert_eq!(loaded.updates.len(), 1);
        assert_eq!(loaded.skipped["bad_price"], 1);
        assert_eq!(
            loaded.examples,
            ["line 2: bad_price: price must be finite and >= 0, got -1"]
        );
    }
}
