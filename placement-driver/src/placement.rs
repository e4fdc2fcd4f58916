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

/// Moves to the front the replica that is the first (preferred leader) of the fewest tablets.
/// A new group's first replica campaigns at once, so this spreads leaders across servers.
pub fn put_preferred_leader_first(replicas: &mut [u64], preferred_counts: &BTreeMap<u64, usize>) {
    let best = replicas
        .iter()
        .enumerate()
        .min_by_key(|(_, r)| (preferred_counts.get(r).copied().unwrap_or(0), **r))
        .map(|(i, _)| i);
    if let Some(i) = best {
        replicas[..=i].rotate_right(1);
    }
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
    fn leaders_spread_over_servers() {
        let mut counts = BTreeMap::from([(1, 2), (2, 1), (3, 1)]);
        let mut r = vec![1, 2, 3];
        put_preferred_leader_first(&mut r, &counts);
        assert_eq!(r, vec![2, 1, 3]);
        counts.insert(2, 5);
        let mut r = vec![1, 2, 3];
        put_preferred_leader_first(&mut r, &counts);
        assert_eq!(r, vec![3, 1, 2]);
    }

    #[test]
    fn too_few_servers() {
        let s = [server(1, "a")];
        let refs: Vec<&Server> = s.iter().collect();
        assert!(choose_replicas(&refs, &BTreeMap::new(), 3).is_none());
    }
}
