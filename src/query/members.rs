//! Who answers for which partition in a group: each instance announces its query address and
//! the events partitions it holds on a compacted topic (`query.members_topic`), keyed by its
//! instance id, whenever they change; every instance reads them all. A partition's owner is
//! the latest announcement that claims it (a new owner announces after the old one gave the
//! partition up, and an instance killed without a word is overruled the same way).

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// One instance's announcement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    pub instance_id: String,
    /// Where other instances send this instance's users' queries (`query.advertise_url`).
    pub query_url: String,
    /// The events partitions it holds.
    pub partitions: Vec<i32>,
    /// Wall time of the announcement (ms): the latest claim of a partition wins.
    pub announced_at_ms: i64,
}

/// The group's announcements, as read from the members topic.
#[derive(Debug, Default)]
pub struct Members {
    by_instance: RwLock<BTreeMap<String, Announcement>>,
}

impl Members {
    /// Takes in one record of the members topic: an announcement, or a tombstone (`None`)
    /// for an instance gone. An undecodable record is ignored (logged by the caller).
    pub fn read(&self, key: &str, payload: Option<&[u8]>) -> Result<(), serde_json::Error> {
        let mut members = self.by_instance.write().expect("not poisoned");
        let Some(payload) = payload else {
            members.remove(key);
            return Ok(());
        };
        let announcement: Announcement = serde_json::from_slice(payload)?;
        members.insert(announcement.instance_id.clone(), announcement);
        Ok(())
    }

    /// The instance that holds `partition` by the latest claim, and its query address.
    pub fn owner_of(&self, partition: i32) -> Option<(String, String)> {
        let members = self.by_instance.read().expect("not poisoned");
        let claims = members
            .values()
            .filter(|a| a.partitions.contains(&partition));
        let latest = claims.max_by_key(|a| (a.announced_at_ms, a.instance_id.clone()))?;
        Some((latest.instance_id.clone(), latest.query_url.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce(members: &Members, id: &str, partitions: &[i32], at: i64) {
        let announcement = Announcement {
            instance_id: id.into(),
            query_url: format!("http://{id}:8080"),
            partitions: partitions.to_vec(),
            announced_at_ms: at,
        };
        let bytes = serde_json::to_vec(&announcement).unwrap();
        members.read(id, Some(&bytes)).unwrap();
    }

    #[test]
    fn the_latest_claim_of_a_partition_wins_and_a_tombstone_withdraws_all() {
        let members = Members::default();
        announce(&members, "a", &[0, 1, 2], 1_000);
        assert_eq!(members.owner_of(1).unwrap().0, "a");
        // b joins and takes 2; a, killed, never said it gave 2 up.
        announce(&members, "b", &[2], 2_000);
        assert_eq!(
            members.owner_of(2).unwrap(),
            ("b".into(), "http://b:8080".into())
        );
        assert_eq!(members.owner_of(0).unwrap().0, "a");
        members.read("b", None).unwrap();
        assert_eq!(
            members.owner_of(2).unwrap().0,
            "a",
            "a's older claim is all that is left"
        );
        assert_eq!(members.owner_of(7), None);
        assert!(members.read("c", Some(b"{\"instance_id\":1}")).is_err());
    }
}
