//! Which aggregator owns an event: rendezvous (highest-random-weight)
//! hashing of the event's id over the listed aggregators' names. Every edge
//! and Worker with the same names computes the same owners without talking
//! to the others; an aggregator that is down hands each of its ids to that
//! id's next-ranked aggregator, and only those ids move. The weights are a
//! fixed, platform-independent mix (no per-process seed), so a native edge
//! and a Worker agree, and a test can compute owners itself.

/// An aggregator's place in the list, by name.
#[derive(Debug, Clone)]
pub struct Owners {
    keys: Vec<u64>,
}

/// Events of a batch grouped by the aggregator chosen for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// `(aggregator, indices of the events it takes)`, by aggregator index.
    pub groups: Vec<(usize, Vec<usize>)>,
    /// Events placed on an aggregator other than their first-ranked one (it is down).
    pub moved: usize,
    /// Events no aggregator that is up can take.
    pub unplaced: Vec<usize>,
}

impl Owners {
    /// The owners over `names`, in list order (an entry's name: see [`aggregator_name`]).
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        Owners {
            keys: names
                .iter()
                .map(|n| crate::fnv1a(n.as_ref().as_bytes()))
                .collect(),
        }
    }

    /// How many aggregators are listed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every aggregator's weight for `id`: the highest owns it.
    fn weight(&self, aggregator: usize, id: &[u8; 16]) -> u64 {
        mix(id_hash(id) ^ self.keys[aggregator])
    }

    /// The aggregators in the order they take `id`: its owner first.
    pub fn rank(&self, id: &[u8; 16]) -> Vec<usize> {
        let h = id_hash(id);
        let mut order: Vec<(u64, usize)> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (mix(h ^ k), i))
            .collect();
        // Ties (equal weights) go to the earlier entry, so the order is total.
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        order.into_iter().map(|(_, i)| i).collect()
    }

    /// The first-ranked aggregator for `id` among those `up` says are up, and whether it is
    /// `id`'s first-ranked of all (not moved).
    pub fn owner(&self, id: &[u8; 16], up: impl Fn(usize) -> bool) -> Option<(usize, bool)> {
        let h = id_hash(id);
        let mut best: Option<(u64, usize)> = None;
        let mut first: Option<(u64, usize)> = None;
        for (i, k) in self.keys.iter().enumerate() {
            let w = (mix(h ^ k), i);
            let better = |b: &Option<(u64, usize)>| b.is_none_or(|b| w.0 > b.0);
            if better(&first) {
                first = Some(w);
            }
            if up(i) && better(&best) {
                best = Some(w);
            }
        }
        let (best, first) = (best?.1, first?.1);
        Some((best, best == first))
    }

    /// Places the events with `ids` on the aggregators `up` says are up.
    pub fn place<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a [u8; 16]>,
        up: impl Fn(usize) -> bool,
    ) -> Placement {
        let mut by_aggregator: Vec<Vec<usize>> = vec![Vec::new(); self.keys.len()];
        let mut placement = Placement::default();
        for (n, id) in ids.into_iter().enumerate() {
            match self.owner(id, &up) {
                Some((a, first)) => {
                    by_aggregator[a].push(n);
                    placement.moved += usize::from(!first);
                }
                None => placement.unplaced.push(n),
            }
        }
        placement.groups = by_aggregator
            .into_iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        placement
    }

    /// Whether `aggregator` outweighs every other for `id` (a check for tests and tools).
    pub fn owns(&self, aggregator: usize, id: &[u8; 16]) -> bool {
        let w = self.weight(aggregator, id);
        (0..self.keys.len()).all(|i| i == aggregator || self.weight(i, id) < w)
    }
}

/// An aggregator list entry's name and address: `name=address`, or the address alone,
/// which is then its name too. Edges that list an aggregator under one name agree on
/// its ids, whatever address each reaches it at (QUIC for native edges, HTTPS for Workers).
pub fn aggregator_name(entry: &str) -> (&str, &str) {
    match entry.split_once('=') {
        Some((name, address)) if !name.trim().is_empty() && !name.contains("://") => {
            (name.trim(), address.trim())
        }
        _ => (entry.trim(), entry.trim()),
    }
}

/// MurmurHash3's 64-bit finalizer: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn id_hash(id: &[u8; 16]) -> u64 {
    let (hi, lo) = id.split_at(8);
    let word = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_be_bytes(a)
    };
    mix(word(hi) ^ mix(word(lo)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        id[8..].copy_from_slice(&n.to_be_bytes());
        id
    }

    #[test]
    fn owners_agree_whatever_the_list_order_and_share_the_ids() {
        let a = Owners::new(&["a1", "a2", "a3"]);
        let b = Owners::new(&["a3", "a1", "a2"]);
        let mut share = [0usize; 3];
        for n in 0..30_000 {
            let owner = a.rank(&id(n))[0];
            // The same name owns the id in either list.
            assert_eq!(
                ["a3", "a1", "a2"][b.rank(&id(n))[0]],
                ["a1", "a2", "a3"][owner]
            );
            assert!(a.owns(owner, &id(n)));
            share[owner] += 1;
        }
        for s in share {
            assert!((9_000..11_000).contains(&s), "{share:?}");
        }
    }

    #[test]
    fn a_down_aggregator_moves_only_its_own_ids_to_their_next_ranked() {
        let owners = Owners::new(&["a1", "a2", "a3"]);
        let ids: Vec<[u8; 16]> = (0..3_000).map(id).collect();
        let all = owners.place(&ids, |_| true);
        assert_eq!(all.moved, 0);
        assert_eq!(
            all.groups.iter().map(|(_, v)| v.len()).sum::<usize>(),
            3_000
        );
        let without_1 = owners.place(&ids, |a| a != 1);
        let on_1 = all
            .groups
            .iter()
            .find(|(a, _)| *a == 1)
            .map_or(0, |(_, v)| v.len());
        assert_eq!(without_1.moved, on_1);
        for (a, members) in &without_1.groups {
            for &n in members {
                let rank = owners.rank(&ids[n]);
                // Either its owner, or the next after the down one.
                assert!(rank[0] == *a || (rank[0] == 1 && rank[1] == *a));
            }
        }
        let none = owners.place(&ids, |_| false);
        assert_eq!(none.unplaced.len(), 3_000);
        assert!(none.groups.is_empty());
    }

    #[test]
    fn weights_are_fixed_across_platforms_and_names_parse() {
        // A fixed vector: a change here would move every id of every deployment.
        let owners = Owners::new(&["agg-1", "agg-2", "agg-3"]);
        let ranks: Vec<usize> = (0..8).map(|n| owners.rank(&id(n))[0]).collect();
        assert_eq!(ranks, [0, 1, 2, 0, 1, 0, 2, 2]);
        assert_eq!(aggregator_name("a1=10.0.0.1:4433"), ("a1", "10.0.0.1:4433"));
        assert_eq!(
            aggregator_name("10.0.0.1:4433"),
            ("10.0.0.1:4433", "10.0.0.1:4433")
        );
        assert_eq!(
            aggregator_name("a1=https://agg.example/x?y=1"),
            ("a1", "https://agg.example/x?y=1")
        );
        assert_eq!(
            aggregator_name("https://agg.example/x?y=1"),
            ("https://agg.example/x?y=1", "https://agg.example/x?y=1")
        );
    }
}
