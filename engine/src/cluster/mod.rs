//! Scale-out (design section 7): N engine nodes behind HAProxy, every purchase owned by
//! exactly one of them.
//!
//! - A purchase belongs to partition `crc32(Idempotency-Key) mod len(nodes)`: CRC-32 as
//!   zlib, gzip and HAProxy's `crc32` converter compute it, over the header value's
//!   bytes. The balancer computes the same function
//!   (`req.fhdr(Idempotency-Key,1),crc32,mod(N)`), so every request of a purchase reaches
//!   the node that owns it ([`partition_of_key`]).
//! - Node `i` of `[cluster] nodes` owns partition `i`. The ids it issues name it
//!   (`p2-pur_…`), so `GET /v1/purchases/{id}` is routed the same way ([`split_id`]).
//!   Ids without the prefix, which a cluster of one issues, are partition 0's.
//! - A node asked for a purchase of another partition answers `421 Misdirected Request`
//!   naming the owner, and starts nothing ([`Membership::check_key`],
//!   [`Membership::check_id`]).
//! - A data directory remembers which partition it holds ([`claim_data_dir`]), so the
//!   failover drill (the dead node's directory started elsewhere) cannot start it as the
//!   wrong one.
//! - [`haproxy`] writes the balancer's configuration.

pub mod haproxy;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::problem::ApiProblem;

/// The partition of an idempotency key among `partitions` (at least 1): the CRC-32 of
/// the key's bytes (the IEEE polynomial of zlib and gzip, which HAProxy's `crc32`
/// converter computes too), modulo the count.
pub fn partition_of_key(key: &[u8], partitions: u32) -> u32 {
    crc32fast::hash(key) % partitions.max(1)
}

/// Most decimal digits of a partition number in an id (partitions are below
/// [`crate::config::MAX_CLUSTER_NODES`]).
const MAX_PARTITION_DIGITS: usize = 4;

/// Splits a purchase id into the partition it names and the node-local rest:
/// `p2-pur_…` gives `(Some(2), "pur_…")`, an id without the prefix `(None, id)`.
/// `None` when the prefix is malformed (`p02-…`, `p12345-…`): such an id is nobody's.
pub fn split_id(id: &str) -> Option<(Option<u32>, &str)> {
    // A prefix is `p`, decimal digits, `-` (what HAProxy's `path_reg ^/v1/purchases/p[0-9]+-`
    // matches); `pur_…` starts with a `p` too, but no digit follows it.
    let digits = id.strip_prefix('p').map_or(0, |rest| {
        rest.bytes().take_while(u8::is_ascii_digit).count()
    });
    if digits == 0 || id.as_bytes().get(1 + digits) != Some(&b'-') {
        return Some((None, id));
    }
    let number = &id[1..1 + digits];
    if digits > MAX_PARTITION_DIGITS || (digits > 1 && number.starts_with('0')) {
        return None;
    }
    Some((Some(number.parse().ok()?), &id[digits + 2..]))
}

/// This node's place in its cluster, borrowed from the config: the nodes in partition
/// order, and which of them this one is. Without `[cluster]` the engine is a cluster of
/// one: partition 0 of 1, ids without a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership<'a> {
    node: u32,
    nodes: &'a [String],
    declared: bool,
}

impl<'a> Membership<'a> {
    /// The membership `config` describes.
    pub fn of(config: &'a Config) -> Membership<'a> {
        match &config.cluster {
            Some(c) => Membership {
                node: c.node,
                nodes: &c.nodes,
                declared: true,
            },
            None => Membership {
                node: 0,
                nodes: std::slice::from_ref(&config.server.listen),
                declared: false,
            },
        }
    }

    /// How many partitions (nodes) there are.
    pub fn partitions(&self) -> u32 {
        self.nodes.len().max(1) as u32
    }

    /// The partition this node owns.
    pub fn node(&self) -> u32 {
        self.node
    }

    /// Every node's address, in partition order.
    pub fn nodes(&self) -> &'a [String] {
        self.nodes
    }

    /// Whether the config has a `[cluster]` section (then ids carry their partition).
    pub fn is_declared(&self) -> bool {
        self.declared
    }

    /// The address of the node owning `partition`.
    pub fn owner(&self, partition: u32) -> &'a str {
        self.nodes
            .get(partition as usize)
            .map_or("", String::as_str)
    }

    fn misdirected(&self, partition: u32, what: &str) -> ApiProblem {
        let owner = self.owner(partition);
        ApiProblem::misdirected(
            format!(
                "{what} belongs to partition {partition}, owned by node {partition} ({owner}); \
                 this is node {} — send it to its owner, or through the load balancer, \
                 which routes it there",
                self.node
            ),
            partition,
            owner,
        )
    }

    /// `Ok` when this node owns the purchase of `key` (an `Idempotency-Key` already
    /// checked); else the 421 problem naming the owner.
    pub fn check_key(&self, key: &str) -> Result<(), ApiProblem> {
        if self.nodes.len() <= 1 {
            return Ok(());
        }
        let partition = partition_of_key(key.as_bytes(), self.partitions());
        if partition == self.node {
            Ok(())
        } else {
            Err(self.misdirected(partition, "a purchase with this Idempotency-Key"))
        }
    }

    /// `Ok` with the node-local part of `id` when this node owns the purchase `id`
    /// names; 404 when it names no partition of this cluster (or is malformed), 421
    /// naming the owner when another node has it.
    pub fn check_id<'i>(&self, id: &'i str) -> Result<&'i str, ApiProblem> {
        let (partition, local) = split_id(id).ok_or_else(ApiProblem::not_found)?;
        let partition = partition.unwrap_or(0);
        if partition >= self.partitions() {
            return Err(ApiProblem::not_found());
        }
        if partition != self.node {
            return Err(self.misdirected(partition, "this purchase"));
        }
        Ok(local)
    }

    /// The id of a new purchase whose node-local id is `local`: prefixed with this
    /// node's partition in a declared cluster, as it is otherwise.
    pub fn name_id(&self, local: String) -> String {
        if self.declared {
            format!("p{}-{local}", self.node)
        } else {
            local
        }
    }
}

/// The file in a data directory that records which partition it holds.
pub const CLAIM_FILE: &str = "bookbroker-cluster.json";

/// What a data directory records about its place in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The partition whose purchases the directory holds.
    pub partition: u32,
    /// How many partitions its cluster has.
    pub partitions: u32,
}

/// Why a data directory cannot serve this node's partition.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The claim file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The claim file is not ours.
    #[error("{path}: unreadable ({detail}); it records which cluster partition the data directory holds")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        detail: String,
    },
    /// The directory holds another partition, or a cluster of another size.
    #[error(
        "data directory {dir} holds partition {} of {}, but this node is partition {} of {}: \
         its purchases would be answered by a node the load balancer never sends them to. \
         Start it with the [cluster] node = {} of the cluster it belongs to (partitions are \
         fixed when a cluster is created)",
        .held.partition, .held.partitions, .wanted.partition, .wanted.partitions, .held.partition
    )]
    WrongPartition {
        /// The directory.
        dir: PathBuf,
        /// What it holds.
        held: Claim,
        /// What this node is.
        wanted: Claim,
    },
}

/// Records in `dir` (a data directory) that it holds `membership`'s partition, or checks
/// that it already does. A directory without the record is claimed (it is new, or from
/// before clusters); one that holds another partition, or a partition of a cluster of
/// another size, is refused: its purchases belong where the balancer sends their keys.
pub fn claim_data_dir(dir: &Path, membership: &Membership<'_>) -> Result<Claim, ClusterError> {
    let wanted = Claim {
        partition: membership.node(),
        partitions: membership.partitions(),
    };
    let path = dir.join(CLAIM_FILE);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ClusterError::Io { path, source }
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let held: Claim =
                serde_json::from_slice(&bytes).map_err(|e| ClusterError::Unreadable {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            if held != wanted {
                return Err(ClusterError::WrongPartition {
                    dir: dir.to_path_buf(),
                    held,
                    wanted,
                });
            }
            Ok(held)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let text = serde_json::to_vec(&wanted).map_err(|e| ClusterError::Unreadable {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            // Write aside, sync, rename, sync the directory: a crash leaves no claim or
            // a whole one, never half of one that would stop every later start.
            let tmp = dir.join(format!("{CLAIM_FILE}.tmp"));
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&text).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
            tracing::info!(
                partition = wanted.partition,
                partitions = wanted.partitions,
                "data directory claimed for this partition"
            );
            Ok(wanted)
        }
        Err(e) => Err(io(&path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;

    fn config(nodes: &[&str], node: u32) -> Config {
        let mut c = Config::from_toml_str("").unwrap();
        c.cluster = Some(ClusterConfig {
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            node,
        });
        c
    }

    #[test]
    fn partition_is_zlib_crc32_mod_n() {
        // Known CRC-32 (zlib, gzip, HAProxy `crc32`) values.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32fast::hash(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        assert_eq!(crc32fast::hash(b"a"), 0xE8B7_BE43);
        assert_eq!(partition_of_key(b"123456789", 3), 0xCBF4_3926 % 3);
        assert_eq!(partition_of_key(b"a", 1), 0);
        assert_eq!(partition_of_key(b"a", 0), 0);
    }

    #[test]
    fn ids_name_their_partition() {
        assert_eq!(split_id("p2-pur_0001_x"), Some((Some(2), "pur_0001_x")));
        assert_eq!(split_id("p0-pur_0001_x"), Some((Some(0), "pur_0001_x")));
        assert_eq!(split_id("p1023-pur_1"), Some((Some(1023), "pur_1")));
        assert_eq!(split_id("pur_0001_x"), Some((None, "pur_0001_x")));
        assert_eq!(split_id("order-1"), Some((None, "order-1")));
        assert_eq!(split_id("p-pur_1"), Some((None, "p-pur_1")));
        for bad in ["p02-pur_1", "p12345-pur_1"] {
            assert_eq!(split_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_and_ids_of_other_partitions_are_misdirected() {
        let c = config(&["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"], 1);
        let m = Membership::of(&c);
        assert_eq!(m.partitions(), 3);
        let mine = (0..100)
            .map(|i| format!("key-{i}"))
            .find(|k| partition_of_key(k.as_bytes(), 3) == 1)
            .unwrap();
        let theirs = (0..100)
            .map(|i| format!("key-{i}"))
            .find(|k| partition_of_key(k.as_bytes(), 3) == 2)
            .unwrap();
        assert!(m.check_key(&mine).is_ok());
        let p = m.check_key(&theirs).unwrap_err();
        assert_eq!(p.status, 421);
        assert!(p.detail.contains("10.0.0.3:8080"), "{}", p.detail);
        let body: serde_json::Value = serde_json::from_slice(&p.body()).unwrap();
        assert_eq!(body["owner"], "10.0.0.3:8080");
        assert_eq!(body["partition"], 2);

        assert_eq!(m.check_id("p1-pur_0000_ab"), Ok("pur_0000_ab"));
        assert_eq!(m.check_id("p2-pur_0000_ab").unwrap_err().status, 421);
        // Ids of a cluster of one are partition 0's.
        assert_eq!(m.check_id("pur_0000_ab").unwrap_err().status, 421);
        assert_eq!(m.check_id("p3-pur_0000_ab").unwrap_err().status, 404);
        assert_eq!(m.check_id("p01-pur_0000_ab").unwrap_err().status, 404);
        assert_eq!(m.name_id("pur_0000_ab".into()), "p1-pur_0000_ab");
    }

    #[test]
    fn without_a_cluster_section_everything_is_local() {
        let c = Config::from_toml_str("").unwrap();
        let m = Membership::of(&c);
        assert_eq!((m.partitions(), m.node(), m.is_declared()), (1, 0, false));
        assert!(m.check_key("anything").is_ok());
        assert_eq!(m.check_id("pur_0000_ab"), Ok("pur_0000_ab"));
        assert_eq!(m.check_id("p0-pur_0000_ab"), Ok("pur_0000_ab"));
        assert_eq!(m.check_id("p1-pur_0000_ab").unwrap_err().status, 404);
        assert_eq!(m.name_id("pur_0000_ab".into()), "pur_0000_ab");
    }

    #[test]
    fn a_data_directory_keeps_its_partition() {
        let dir = tempfile::tempdir().unwrap();
        let one = config(&["a:1", "b:1", "c:1"], 1);
        let claim = claim_data_dir(dir.path(), &Membership::of(&one)).unwrap();
        assert_eq!(
            claim,
            Claim {
                partition: 1,
                partitions: 3
            }
        );
        // The same partition on another address (the failover drill) is fine.
        let moved = config(&["a:1", "z:9", "c:1"], 1);
        assert!(claim_data_dir(dir.path(), &Membership::of(&moved)).is_ok());
        let other = config(&["a:1", "b:1", "c:1"], 2);
        let e = claim_data_dir(dir.path(), &Membership::of(&other)).unwrap_err();
        assert!(e.to_string().contains("holds partition 1 of 3"), "{e}");
        let alone = Config::from_toml_str("").unwrap();
        assert!(claim_data_dir(dir.path(), &Membership::of(&alone)).is_err());
    }
}
