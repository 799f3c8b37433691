//! Catalog messages (`streamrec.item.v1`) and tombstones, as a compacted topic delivers them.

use serde_json::{Map, Value};

use super::{
    attribute_within, check_price, count_within, id_within, integral, key_id, key_names, kind_name,
    optional_id, parse_time_text, present, read_as_ours, reject, required_id, required_string,
    Cleaner, Reason, Rejection,
};
use crate::catalog::{CatalogItem, CatalogUpdate};

pub const ITEM_SCHEMA: &str = "streamrec.item.v1";

impl Cleaner {
    /// A catalog topic's message: an item, or a tombstone (no value) whose key names the item.
    pub fn clean_catalog(
        &self,
        payload: Option<&[u8]>,
        key: Option<&[u8]>,
    ) -> Result<CatalogUpdate, Rejection> {
        let Some(payload) = payload else {
            let item_id = key.map(|k| key_id(k).trim().to_owned());
            let item_id = item_id.filter(|k| !k.is_empty()).ok_or_else(|| {
                reject(Reason::MissingKey, "a tombstone needs the item id as key")
            })?;
            let item_id = id_within(&item_id, "item_id", self.config.max_id_len)?;
            return Ok(CatalogUpdate::Remove { item_id });
        };
        let item = self
            .catalog_object(payload)
            .and_then(|object| self.item_from_object(&object))
            .map_err(|rejection| self.naming_catalog_fields(rejection))?;
        let names_item = |k: &[u8]| {
            key_names(k, &item.item_id) || String::from_utf8_lossy(k).trim() == item.item_id
        };
        if key.is_some_and(|k| !names_item(k)) {
            return Err(reject(
                Reason::KeyMismatch,
                "the message key differs from item_id",
            ));
        }
        Ok(CatalogUpdate::Upsert(item))
    }

    /// A listing's object, the shop's field names read as ours (see `CatalogNames`).
    fn catalog_object(&self, payload: &[u8]) -> Result<Map<String, Value>, Rejection> {
        let mut object = self.object(payload)?;
        read_as_ours(&mut object, self.catalog_names.fields());
        Ok(object)
    }

    /// A rejection about a field the shop names its own way names the shop's name too.
    fn naming_catalog_fields(&self, mut rejection: Rejection) -> Rejection {
        let field = match rejection.reason {
            Reason::BadTimestamp => Some("updated_at"),
            reason => reason.field(),
        };
        if let Some(name) = field.and_then(|f| self.catalog_names.shop_name(f)) {
            let table = "engine.clean.catalog_field_names";
            rejection.detail += &format!(" (read from {name:?}, {table})");
        }
        rejection
    }

    fn item_from_object(&self, object: &Map<String, Value>) -> Result<CatalogItem, Rejection> {
        // A listing in the shop's own names is the shop's format, not ours: it carries no
        // schema name of ours (and `schema` may be something else, as Kafka Connect's is).
        if self.catalog_names.is_empty() {
            let schema = required_string(object, "schema")?;
            if schema != ITEM_SCHEMA {
                return Err(reject(
                    Reason::BadSchema,
                    format!("schema must be {ITEM_SCHEMA:?}, got {schema:?}"),
                ));
            }
        }
        let max_id = self.config.max_id_len;
        let item_id = id_within(&required_id(object, "item_id")?, "item_id", max_id)?;
        let category = id_within(&required_id(object, "category")?, "category", max_id)?;
        let price = match present(object, "price") {
            None => return Err(reject(Reason::MissingField("price"), "price is required")),
            Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Some(other) => {
                return Err(reject(
                    Reason::BadPrice,
                    format!("price must be a number, got {}", kind_name(other)),
                ))
            }
        };
        check_price(price)?;
        let in_stock = match present(object, "in_stock") {
            None => {
                return Err(reject(
                    Reason::MissingField("in_stock"),
                    "in_stock is required",
                ))
            }
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(reject(
                    Reason::WrongFieldType("in_stock"),
                    format!("in_stock must be a boolean, got {}", kind_name(other)),
                ))
            }
        };
        let brand = optional_id(object, "brand")?
            .map(|b| self.attribute_text(&b, "brand"))
            .transpose()?;
        Ok(CatalogItem {
            item_id,
            category,
            price,
            in_stock,
            brand,
            tags: self.tags(object)?,
            updated_at_ms: updated_at(object)?,
        })
    }

    fn attribute_text(&self, raw: &str, field: &'static str) -> Result<String, Rejection> {
        attribute_within(raw, field, field, self.config.max_attribute_len)
    }

    fn tags(&self, object: &Map<String, Value>) -> Result<Vec<String>, Rejection> {
        let tags = match present(object, "tags") {
            None => return Ok(Vec::new()),
            Some(Value::Array(tags)) => tags,
            Some(other) => {
                return Err(reject(
                    Reason::WrongFieldType("tags"),
                    format!("tags must be an array of strings, got {}", kind_name(other)),
                ))
            }
        };
        count_within(tags.len(), "tags", "tags", self.config.max_attributes)?;
        tags.iter()
            .map(|tag| match tag {
                Value::String(s) => self.attribute_text(s, "tags"),
                other => Err(reject(
                    Reason::WrongFieldType("tags"),
                    format!("a tag must be a string, got {}", kind_name(other)),
                )),
            })
            .collect()
    }
}

fn updated_at(object: &Map<String, Value>) -> Result<i64, Rejection> {
    let bad = |detail: String| reject(Reason::BadTimestamp, detail);
    match present(object, "updated_at") {
        None => Err(reject(
            Reason::MissingField("updated_at"),
            "updated_at is required",
        )),
        Some(Value::Number(n)) => integral(n)
            .ok_or_else(|| bad(format!("updated_at must be epoch milliseconds, got {n}"))),
        Some(Value::String(s)) => parse_time_text(s.trim())
            .ok_or_else(|| bad(format!("updated_at {s:?} is neither epoch ms nor RFC 3339"))),
        Some(other) => Err(bad(format!(
            "updated_at must be a number or an RFC 3339 string, got {}",
            kind_name(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use crate::catalog::CatalogUpdate;
    use crate::clean::{Cleaner, Reason};
    use crate::config::CleanConfig;

    const ITEM: &[u8] = br#"{"schema":"streamrec.item.v1","item_id":"i7","category":"c","price":1,"in_stock":true,"updated_at":1}"#;

    fn clean(payload: Option<&[u8]>, key: &[u8]) -> Result<CatalogUpdate, Reason> {
        let cleaner = Cleaner::new(Default::default());
        cleaner
            .clean_catalog(payload, Some(key))
            .map_err(|r| r.reason)
    }

    #[test]
    fn a_key_serialized_as_json_names_its_item() {
        for key in [&b"i7"[..], br#""i7""#, br#"{"item_id":"i7"}"#] {
            let removed = clean(None, key).unwrap();
            assert!(
                matches!(&removed, CatalogUpdate::Remove { item_id } if item_id == "i7"),
                "{key:?}: {removed:?}"
            );
            assert!(matches!(
                clean(Some(ITEM), key),
                Ok(CatalogUpdate::Upsert(_))
            ));
        }
        assert_eq!(
            clean(Some(ITEM), br#""i8""#).unwrap_err(),
            Reason::KeyMismatch
        );
        assert_eq!(clean(Some(ITEM), b"i8").unwrap_err(), Reason::KeyMismatch);
    }

    fn shop_cleaner(names: &[(&str, &str)]) -> Cleaner {
        let names = names.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Cleaner::new(CleanConfig {
            catalog_field_names: names.collect(),
            ..CleanConfig::default()
        })
    }

    /// A change-data-capture record of a products table, as Debezium writes one.
    const CDC_ROW: &[u8] = br#"{"op":"u","after":{"sku":"i7","dept":"shoes","price_eur":19.5,"stock":{"available":false},"label":"Acme","updated":"2026-12-08T10:00:00Z"},"source":{"table":"products"}}"#;

    #[test]
    fn a_listing_in_a_shops_own_names_reads_as_ours() {
        let cleaner = shop_cleaner(&[
            ("item_id", "after.sku"),
            ("category", "after.dept"),
            ("price", "after.price_eur"),
            ("in_stock", "after.stock.available"),
            ("brand", "after.label"),
            ("updated_at", "after.updated"),
        ]);
        let CatalogUpdate::Upsert(item) =
            cleaner.clean_catalog(Some(CDC_ROW), Some(b"i7")).unwrap()
        else {
            panic!("a listing")
        };
        assert_eq!(
            (item.item_id.as_str(), item.category.as_str()),
            ("i7", "shoes")
        );
        assert_eq!((item.price, item.in_stock), (19.5, false));
        assert_eq!(item.brand.as_deref(), Some("Acme"));
        assert_eq!(item.updated_at_ms, 1_796_724_000_000);
        // Our own format still reads, schema name included.
        assert!(cleaner.clean_catalog(Some(ITEM), Some(b"i7")).is_ok());
    }

    #[test]
    fn without_names_a_listing_needs_our_schema_name() {
        let flat = br#"{"item_id":"i7","category":"c","price":1,"in_stock":true,"updated_at":1}"#;
        let ours = Cleaner::new(CleanConfig::default()).clean_catalog(Some(flat), None);
        assert_eq!(ours.unwrap_err().reason, Reason::MissingField("schema"));
        let shops = shop_cleaner(&[("brand", "label")]).clean_catalog(Some(flat), None);
        assert!(shops.is_ok(), "{shops:?}");
    }

    #[test]
    fn a_rejection_names_the_shops_field_and_the_setting() {
        let cleaner = shop_cleaner(&[("in_stock", "available"), ("updated_at", "modified")]);
        let listing =
            br#"{"item_id":"i7","category":"c","price":1,"available":"yes","modified":1}"#;
        let rejection = cleaner.clean_catalog(Some(listing), None).unwrap_err();
        assert_eq!(rejection.reason, Reason::WrongFieldType("in_stock"));
        assert_eq!(
            rejection.detail,
            "in_stock must be a boolean, got a string \
             (read from \"available\", engine.clean.catalog_field_names)"
        );
        let listing =
            br#"{"item_id":"i7","category":"c","price":1,"available":true,"modified":"soon"}"#;
        let rejection = cleaner.clean_catalog(Some(listing), None).unwrap_err();
        assert_eq!(rejection.reason, Reason::BadTimestamp);
        assert!(
            rejection
                .detail
                .ends_with("(read from \"modified\", engine.clean.catalog_field_names)"),
            "{}",
            rejection.detail
        );
    }
}
