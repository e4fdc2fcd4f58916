//! Choosing where a new tablet's replicas go.

use std::collections::{BTreeMap, BTreeSet};

use crate::state::Server;

/// Picks `n` servers for a new tablet: distinct zones first, then distinct servers, fewest
/// hosted replicas first (ties broken by id, so placement is deterministic). Returns `None` if
/// fewer than `n` servers exist.
pub fn choose_replicas(
    servers: &[&Server],
    load: &BTreeMap<u64, usize>,
    n: usize,
) -> Option<Vec<u64>> {
    if servers.len() < n {
        return None;
    }
    let mut ordered: Vec<&Server> = servers.to_vec();
    ordered.sort_by_key(|s| (load.get(&s.id).copied().unwrap_or(0), s.id));
    let mut chosen = Vec::new();
    let mut zones = BTreeSet::new();
    for s in &ordered {
        if chosen.len() < n && zones.insert(s.zone.clone()) {
            chosen.push(s.id);
        }
    }
    for s in &ordered {
        if chosen.len() < n && !chosen.contains(&s.id) {
            chosen.push(s.id);
        }
    }
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: u64, zone: &str) -> Server {
        Server {
            id,
            zone: zone.into(),
            addr: String::new(),
            pg_addr: String::new(),
        }
    }

    #[test]
    fn spreads_across_zones_before_doubling_up() {
        let s = [
            server(1, "a"),
            server(2, "a"),
            server(3, "b"),
            server(4, "c"),
        ];
        let refs: Vec<&Server> = s.iter().collect();
        let chosen = choose_replicas(&refs, &BTreeMap::new(), 3).expect("enough servers");
        assert_eq!(chosen, vec![1, 3, 4]);
    }

    #[test]
    fn prefers_less_loaded_servers() {
        let s = [
            server(1, "a"),
            server(2, "a"),
            server(3, "b"),
            server(4, "c"),
        ];
        let refs: Vec<&Server> = s.iter().collect();
        let load = BTreeMap::from([(1, 5), (2, 0)]);
        let chosen = choose_replicas(&refs, &load, 3).expect("enough servers");
        assert_eq!(chosen, vec![2, 3, 4]);
    }

    #[test]
    fn too_few_servers() {
        let s = [server(1, "a")];
        let refs: Vec<&Server> = s.iter().collect();
        assert!(choose_replicas(&refs, &BTreeMap::new(), 3).is_none());
    }
}
