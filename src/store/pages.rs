//! Item records grouped in pages of `ITEMS_PER_PAGE` consecutive items, one sled value each.
//!
//! A page is large enough (hundreds of KB) that sled keeps it as a blob file outside its log:
//! opening a state dir replays the log, and 50k small item records in it cost seconds there and
//! again when read back one by one. The engine still encodes an item record per changed item;
//! the writer merges them into the pages they belong to (the page's other records are copied as
//! stored bytes, never decoded).
//!
//! A page's body: for each of its records in index order, the item index (4 bytes), the record's
//! length (4 bytes), the record — all big-endian.

use std::collections::BTreeMap;

pub const ITEMS_PER_PAGE: u32 = 256;

pub fn page_of(item: u32) -> u32 {
    item / ITEMS_PER_PAGE
}

/// A page's records by item index.
pub type Page = BTreeMap<u32, Vec<u8>>;

pub fn encode(page: &Page) -> Vec<u8> {
    let size: usize = page.values().map(|r| 8 + r.len()).sum();
    let mut body = Vec::with_capacity(size);
    for (item, record) in page {
        body.extend_from_slice(&item.to_be_bytes());
        body.extend_from_slice(&(record.len() as u32).to_be_bytes());
        body.extend_from_slice(record);
    }
    body
}

/// The records of page `number` of pages of `per_page` items, or what is wrong with its body.
pub fn decode(number: u32, per_page: u32, mut body: &[u8]) -> Result<Page, String> {
    let mut page = Page::new();
    while !body.is_empty() {
        let (Some((item, rest)), true) = (body.split_first_chunk::<4>(), body.len() >= 8) else {
            return Err(format!(
                "ends inside a record header ({} bytes left)",
                body.len()
            ));
        };
        let item = u32::from_be_bytes(*item);
        let (len, rest) = rest.split_first_chunk::<4>().expect("8 bytes checked");
        let len = u32::from_be_bytes(*len) as usize;
        if item / per_page != number {
            return Err(format!(
                "holds item {item}, which belongs to page {}",
                item / per_page
            ));
        }
        if page.last_key_value().is_some_and(|(&last, _)| last >= item) {
            return Err(format!("lists item {item} out of order"));
        }
        if rest.len() < len {
            return Err(format!(
                "item {item} claims {len} bytes, {} remain",
                rest.len()
            ));
        }
        page.insert(item, rest[..len].to_vec());
        body = &rest[len..];
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_reads_back_as_written_and_damage_is_described() {
        let page: Page = [(256, vec![1, 2, 3]), (300, vec![]), (511, vec![9; 40])].into();
        let body = encode(&page);
        assert_eq!(decode(1, ITEMS_PER_PAGE, &body), Ok(page));
        assert!(decode(0, ITEMS_PER_PAGE, &body)
            .unwrap_err()
            .contains("belongs to page 1"));
        assert!(decode(1, ITEMS_PER_PAGE, &body[..body.len() - 1])
            .unwrap_err()
            .contains("claims 40 bytes, 39 remain"));
        assert!(decode(1, ITEMS_PER_PAGE, &body[..5])
            .unwrap_err()
            .contains("inside a record header"));
        let twice = [&body[..11], &body[..11]].concat();
        assert!(decode(1, ITEMS_PER_PAGE, &twice)
            .unwrap_err()
            .contains("out of order"));
        assert_eq!(decode(7, ITEMS_PER_PAGE, &[]), Ok(Page::new()));
    }
}
