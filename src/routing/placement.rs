//! Expert placement for the expert-parallel simulator: which devices hold
//! which experts, given the experts' loads (tokens processed).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementKind {
    /// Expert e on device e mod D (Megatron/DeepSpeed default layout).
    RoundRobin,
    /// Longest-processing-time first: experts by decreasing load, each to
    /// the least-loaded device that still has a free slot (⌈E/D⌉ slots per
    /// device). Kept only if no worse than round-robin.
    Greedy,
    /// EPLB-style (DeepSeek, `eplb.py`): the hottest experts get replicas in
    /// spare slots (one at a time, to the expert with the largest
    /// load / replicas), a replica takes an equal share of its expert's
    /// load, and the replicas are packed as in `Greedy`. Kept only if no
    /// worse than `Greedy`.
    ReplicateHot,
}

impl PlacementKind {
    pub fn name(self) -> &'static str {
        match self {
            PlacementKind::RoundRobin => "round-robin",
            PlacementKind::Greedy => "greedy",
            PlacementKind::ReplicateHot => "replicate-hot",
        }
    }
}

/// The devices holding each expert (one entry per replica).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub replicas: Vec<Vec<usize>>,
}

impl Placement {
    /// Load per device when every replica takes an equal share of its expert.
    pub fn device_loads(&self, expert_load: &[f64], devices: usize) -> Vec<f64> {
        let mut out = vec![0.0; devices];
        for (e, devs) in self.replicas.iter().enumerate() {
            let share = expert_load[e] / devs.len().max(1) as f64;
            for &d in devs {
                out[d] += share;
            }
        }
        out
    }

    pub fn replica_count(&self) -> usize {
        self.replicas.iter().map(Vec::len).sum()
    }
}

fn max_of(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// Places `load.len()` experts on `devices` devices. `spare_slots` extra
/// slots per device are offered to replicas by `ReplicateHot`.
pub fn place(kind: PlacementKind, load: &[f64], devices: usize, spare_slots: usize) -> Placement {
    let devices = devices.max(1);
    let rr = round_robin(load.len(), devices);
    if kind == PlacementKind::RoundRobin {
        return rr;
    }
    let slots = load.len().div_ceil(devices).max(1);
    let lpt = pack(load, &vec![1; load.len()], devices, slots);
    let greedy =
        if max_of(&lpt.device_loads(load, devices)) <= max_of(&rr.device_loads(load, devices)) {
            lpt
        } else {
            rr
        };
    if kind == PlacementKind::Greedy {
        return greedy;
    }
    // No expert has more replicas than devices, so more slots than E are idle.
    let slots = slots.saturating_add(spare_slots).min(load.len().max(1));
    let counts = replica_counts(load, devices, devices.saturating_mul(slots));
    let hot = pack(load, &counts, devices, slots);
    if max_of(&hot.device_loads(load, devices)) <= max_of(&greedy.device_loads(load, devices)) {
        hot
    } else {
        greedy
    }
}

fn round_robin(experts: usize, devices: usize) -> Placement {
    Placement {
        replicas: (0..experts).map(|e| vec![e % devices]).collect(),
    }
}

/// Replicas per expert: one each, then one more at a time to the loaded
/// expert with the largest load per replica, up to `total` replicas and at
/// most one per device.
fn replica_counts(load: &[f64], devices: usize, total: usize) -> Vec<usize> {
    let mut counts = vec![1usize; load.len()];
    let mut used = load.len();
    while used < total {
        let best = (0..load.len())
            .filter(|&e| load[e] > 0.0 && counts[e] < devices)
            .max_by(|&a, &b| {
                (load[a] / counts[a] as f64)
                    .total_cmp(&(load[b] / counts[b] as f64))
                    .then(b.cmp(&a))
            });
        let Some(e) = best else { break };
        counts[e] += 1;
        used += 1;
    }
    counts
}

/// LPT packing of replica units (expert e split into `counts[e]` equal
/// units) onto devices with `slots` slots each; replicas of one expert go to
/// distinct devices when a free one exists. Ties go to the lower index.
fn pack(load: &[f64], counts: &[usize], devices: usize, slots: usize) -> Placement {
    let mut units: Vec<(f64, usize)> = Vec::new();
    for (e, &c) in counts.iter().enumerate() {
        for _ in 0..c {
            units.push((load[e] / c as f64, e));
        }
    }
    units.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut dev_load = vec![0.0f64; devices];
    let mut used = vec![0usize; devices];
    let mut replicas = vec![Vec::new(); load.len()];
    for (w, e) in units {
        let pick = |avoid_dup: bool| {
            (0..devices)
                .filter(|&d| used[d] < slots && !(avoid_dup && replicas[e].contains(&d)))
                .min_by(|&a, &b| dev_load[a].total_cmp(&dev_load[b]).then(a.cmp(&b)))
        };
        // Slots suffice by construction (units ≤ devices · slots); the last
        // fallback only guards against that changing.
        let d = pick(true).or_else(|| pick(false)).unwrap_or(0);
        dev_load[d] += w;
        used[d] += 1;
        replicas[e].push(d);
    }
    for r in &mut replicas {
        r.sort_unstable();
    }
    Placement { replicas }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_load(kind: PlacementKind, load: &[f64], d: usize) -> f64 {
        max_of(&place(kind, load, d, 1).device_loads(load, d))
    }

    #[test]
    fn round_robin_is_e_mod_d() {
        let p = place(PlacementKind::RoundRobin, &[1.0; 5], 2, 1);
        assert_eq!(
            p.replicas,
            vec![vec![0], vec![1], vec![0], vec![1], vec![0]]
        );
    }

    #[test]
    fn greedy_balances_a_skewed_load_better_than_round_robin() {
        // Round-robin puts both hot experts (0 and 2) on device 0.
        let load = [10.0, 1.0, 9.0, 2.0];
        assert_eq!(max_load(PlacementKind::RoundRobin, &load, 2), 19.0);
        // LPT: 10 → d0, 9 → d1, 2 → d1, 1 → d0.
        assert_eq!(max_load(PlacementKind::Greedy, &load, 2), 11.0);
        let p = place(PlacementKind::Greedy, &load, 2, 0);
        assert!(p.replicas.iter().all(|r| r.len() == 1));
        // Two experts per device: memory stays balanced.
        assert_eq!(p.device_loads(&[1.0; 4], 2), vec![2.0, 2.0]);
    }

    #[test]
    fn replicate_hot_splits_a_hot_expert() {
        // One expert takes almost everything: no packing helps, replicas do.
        let load = [100.0, 1.0, 1.0, 1.0];
        let greedy = max_load(PlacementKind::Greedy, &load, 4);
        let hot = max_load(PlacementKind::ReplicateHot, &load, 4);
        assert_eq!(greedy, 100.0);
        assert_eq!(hot, 25.0 + 1.0);
        let p = place(PlacementKind::ReplicateHot, &load, 4, 1);
        assert_eq!(p.replicas[0], vec![0, 1, 2, 3]);
        // Spare slots: e0 up to one per device, then e1 (ties go to the lower index).
        assert_eq!(p.replica_count(), 8);
        assert_eq!(p.replicas[1].len(), 2);
    }

    #[test]
    fn greedy_is_never_worse_than_round_robin() {
        let mut rng = crate::seed::rng(3, "placement-test", 0);
        use rand::Rng;
        for _ in 0..200 {
            let e = rng.gen_range(1..20);
            let d = rng.gen_range(1..9);
            let load: Vec<f64> = (0..e).map(|_| rng.gen_range(0..50) as f64).collect();
            let rr = max_load(PlacementKind::RoundRobin, &load, d);
            let g = max_load(PlacementKind::Greedy, &load, d);
            let h = max_load(PlacementKind::ReplicateHot, &load, d);
            assert!(
                g <= rr && h <= g,
                "{load:?} on {d}: rr {rr} greedy {g} hot {h}"
            );
        }
    }
}
