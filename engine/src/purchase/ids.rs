//! Purchase ids, and which shard and core own one.

/// Purchase ids name their shard, so any core can route a `GET` to the owner:
/// `pur_` + 4 hex digits of shard + `_` + 16 random hex digits. In a cluster
/// (`[cluster]`) the id also names its partition in front, `p2-pur_…`
/// (`crate::cluster::Membership::name_id`), so the load balancer routes it to the node.
pub fn new_id(shard: u32, random: &str) -> String {
    format!("pur_{shard:04x}_{random}")
}

/// The shard an id names, if it is one of ours (with or without a partition prefix).
pub fn shard_of(id: &str) -> Option<u32> {
    let (_, local) = crate::cluster::split_id(id)?;
    let rest = local.strip_prefix("pur_")?;
    let (shard, random) = rest.split_once('_')?;
    if shard.len() != 4 || random.len() != 16 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(shard, 16).ok()
}

/// The core that owns `shard`.
pub fn owner_core(shard: u32, cores: usize) -> usize {
    shard as usize % cores.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_shard() {
        let id = new_id(7, "0123456789abcdef");
        assert_eq!(shard_of(&id), Some(7));
        assert_eq!(shard_of("pur_0007_0123"), None);
        assert_eq!(shard_of("order_1"), None);
        assert_eq!(shard_of("pur_zzzz_0123456789abcdef"), None);
        assert_eq!(shard_of(&format!("p2-{id}")), Some(7));
        assert_eq!(shard_of(&format!("p02-{id}")), None);
        assert_eq!(owner_core(7, 2), 1);
        assert_eq!(owner_core(7, 1), 0);
    }
}
