//! A shop's own names for catalog listing fields (`engine.clean.catalog_field_names`), so a
//! product feed is read as the shop's systems produce it (`{"sku":…,"stock":{"available":…}}`,
//! or a change-data-capture record's `after.sku`) with no translating producer in between.

use super::shop_names::NameRule;
use super::{CleanConfig, InvalidSetting};

/// The fields of a `streamrec.item.v1` listing a shop may name its way.
pub const CATALOG_FIELDS: [&str; 7] = [
    "item_id",
    "category",
    "price",
    "in_stock",
    "brand",
    "tags",
    "updated_at",
];

const KEY: &str = "engine.clean.catalog_field_names";

/// `engine.clean.catalog_field_names`, checked. As for events, a field's own name is read as
/// well as the shop's, and where a listing holds both the shop's wins.
#[derive(Clone, Debug, Default)]
pub struct CatalogNames {
    /// (shop's name, our field).
    fields: Vec<(String, &'static str)>,
}

impl CatalogNames {
    /// The names of a config, or an error naming the entry and the rule it breaks.
    pub fn of(config: &CleanConfig) -> Result<CatalogNames, InvalidSetting> {
        let rule = NameRule {
            key: KEY,
            max_len: config.max_id_len,
            own_fields: &CATALOG_FIELDS,
        };
        let mut names = CatalogNames::default();
        for (field, shop_name) in &config.catalog_field_names {
            let Some(&field) = CATALOG_FIELDS.iter().find(|&&f| f == field) else {
                let fields = CATALOG_FIELDS.join(", ");
                let what = format!("{field:?} is not a catalog field; fields are {fields}");
                return Err(super::invalid(KEY, &what));
            };
            rule.check(field, shop_name, &names.fields)?;
            names.fields.push((shop_name.clone(), field));
        }
        Ok(names)
    }

    /// No names: listings are `streamrec.item.v1` as its schema has them.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Every (shop's name, our field).
    pub fn fields(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.fields
            .iter()
            .map(|(name, field)| (name.as_str(), *field))
    }

    /// The shop's name for our field, if it has one.
    pub fn shop_name(&self, field: &str) -> Option<&str> {
        let found = self.fields.iter().find(|&&(_, f)| f == field);
        found.map(|(name, _)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[(&str, &str)]) -> Result<CatalogNames, InvalidSetting> {
        let pairs = entries.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        CatalogNames::of(&CleanConfig {
            catalog_field_names: pairs.collect(),
            ..CleanConfig::default()
        })
    }

    fn refusal(entries: &[(&str, &str)]) -> String {
        let err = names(entries).expect_err("refused");
        format!("{}: {}", err.key, err.rule)
    }

    #[test]
    fn a_shops_catalog_names_are_looked_up_by_our_field() {
        let names = names(&[("item_id", "sku"), ("in_stock", "stock.available")]).unwrap();
        assert_eq!(names.shop_name("item_id"), Some("sku"));
        assert_eq!(names.shop_name("in_stock"), Some("stock.available"));
        assert_eq!(names.shop_name("price"), None);
        assert!(!names.is_empty());
    }

    #[test]
    fn each_bad_entry_is_refused_naming_it_and_its_rule() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (
                &[("sku", "x")],
                "\"sku\" is not a catalog field; fields are item_id,",
            ),
            (
                &[("price", "")],
                "price = \"\": a name has 1 to 128 characters",
            ),
            (&[("price", "item_id")], "item_id is a field of its own"),
            (&[("price", "cost..net")], "a path has no empty part"),
            (
                &[("brand", "label"), ("category", "label")],
                "has that name already",
            ),
        ];
        for (entries, expected) in cases {
            let refusal = refusal(entries);
            assert!(refusal.starts_with("engine.clean.catalog_field_names: "));
            assert!(refusal.contains(expected), "{refusal}");
        }
    }
}
