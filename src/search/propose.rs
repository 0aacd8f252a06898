//! The next candidate to consider: a promotion successive halving has due,
//! else whatever the strategy proposes (a sample, a mutant, a baseline),
//! built into a network with its record. It does not look for duplicates
//! (see `dedupe`) nor write anything (see `recorder`).

use super::halving::Brackets;
use super::model::Guide;
use super::settings::{RunSettings, SearchError};
use super::strategy::{Proposal, Strategy, StrategyKind};
use crate::arch::Network;
use crate::hash::{structural_hash, Hashes};
use crate::seed;
use crate::space::Space;
use crate::store::{CandidateRecord, Store};
use crate::surrogate::features::features;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;

/// A candidate ready to train.
pub(super) struct Job {
    pub net: Network,
    pub record: CandidateRecord,
    /// Successive-halving bracket and rung, and the architecture's first
    /// candidate.
    pub bracket: usize,
    pub rung: usize,
    pub root: u64,
}

pub(super) enum Proposed {
    /// An evaluated architecture trained again at a higher rung.
    Promotion(Job),
    /// A new candidate, not yet compared with what was seen.
    Fresh {
        net: Network,
        record: CandidateRecord,
    },
    /// The strategy's proposal could not be built; it is withdrawn and
    /// uses no id.
    Unbuildable,
}

pub(super) struct Proposer<'a> {
    space: &'a Space,
    settings: &'a RunSettings,
    pub strategy: Strategy,
    /// Successive halving's brackets (None without halving).
    pub rungs: Option<Brackets>,
    /// The model-based strategy's surrogate and what it was fitted on.
    pub guide: Option<Guide>,
    /// Structural hashes of the guided choices handed out, so a batch does
    /// not pick the same pool winner twice before it is stored.
    chosen: HashSet<u128>,
    /// The task's vocabulary (features count its embedding and head).
    vocab: usize,
}

/// A built candidate: network, origin text, parent.
type Built = (Network, String, Option<u64>);

impl<'a> Proposer<'a> {
    pub fn new(
        space: &'a Space,
        settings: &'a RunSettings,
        strategy: Strategy,
        rungs: Option<Brackets>,
    ) -> Proposer<'a> {
        let guide = (strategy.kind == StrategyKind::Model)
            .then(|| Guide::new(settings.model, settings.seed));
        Proposer {
            space,
            settings,
            strategy,
            rungs,
            guide,
            chosen: HashSet::new(),
            vocab: space.ctx().vocab,
        }
    }

    /// The surrogate's features of a network (None unless the strategy is
    /// model-based).
    pub fn features(&self, net: &Network) -> Option<Vec<f64>> {
        self.guide.as_ref().map(|_| features(&net.arch, self.vocab))
    }

    /// A trained candidate's features and score, for the surrogate.
    pub fn observe(&mut self, id: u64, features: Option<Vec<f64>>, score: f64) {
        if let (Some(g), Some(f)) = (self.guide.as_mut(), features) {
            g.observe(id, f, score);
        }
    }

    /// The surrogate's validation, when one is due (see `Guide::due_report`).
    pub fn surrogate_report(&mut self) -> Option<(usize, Option<f64>)> {
        self.guide.as_mut()?.due_report()
    }

    /// Model-based proposal: a pool of fresh samples and mutations of the
    /// best trained candidates, without architectures already stored or
    /// chosen, ranked by the surrogate's upper confidence bound.
    fn guided(
        &mut self,
        store: &dyn Store,
        rng: &mut ChaCha8Rng,
    ) -> Result<Option<Built>, SearchError> {
        let space = self.space;
        let Some(guide) = self.guide.as_mut() else {
            return Ok(space.sample(rng).map(|n| (n, "sample".into(), None)).ok());
        };
        let share = guide.settings.random_share;
        // No draw at share 0, so such a run's stream is what it was before
        // the setting existed.
        if share > 0.0 && rng.gen::<f64>() < share {
            let n = space.sample(rng).ok();
            return Ok(n.map(|n| (n, "model: random pick".into(), None)));
        }
        let mut parents = Vec::new();
        for id in guide.parents() {
            if let Some(c) = store.candidate(id)? {
                parents.push((id, c.derivation));
            }
        }
        let mut pool: Vec<(Built, u128)> = Vec::new();
        let mut seen = HashSet::new();
        for k in 0..guide.settings.pool {
            let built = if k % 2 == 0 || parents.is_empty() {
                space
                    .sample(rng)
                    .ok()
                    .map(|n| (n, "model: sample".to_string(), None))
            } else {
                let (p, term) = &parents[(k / 2) % parents.len()];
                space
                    .mutate(term, rng)
                    .ok()
                    .map(|(n, m)| (n, format!("model: mutation: {}", m.detail), Some(*p)))
            };
            let Some(b) = built else { continue };
            let h = structural_hash(&b.0.arch);
            if !seen.insert(h) || self.chosen.contains(&h) || store.by_structural(h)?.is_some() {
                continue;
            }
            pool.push((b, h));
        }
        let rows: Vec<Vec<f64>> = pool
            .iter()
            .map(|(b, _)| features(&b.0.arch, self.vocab))
            .collect();
        let Some(i) = guide.choose(&rows) else {
            return Ok(None);
        };
        let (built, h) = pool.swap_remove(i);
        self.chosen.insert(h);
        Ok(Some(built))
    }

    /// The candidate that would get `id`.
    pub fn next(&mut self, store: &dyn Store, id: u64) -> Result<Proposed, SearchError> {
        if let Some(job) = self.promotion(store, id)? {
            return Ok(Proposed::Promotion(job));
        }
        let (space, settings) = (self.space, self.settings);
        let mut rng = seed::rng(settings.seed, "propose", id);
        let built = match self.strategy.propose(&mut rng) {
            Proposal::Guided => self.guided(store, &mut rng)?,
            Proposal::Sample => space
                .sample(&mut rng)
                .map(|n| (n, "sample".to_string(), None))
                .ok(),
            Proposal::Baseline(name) => space
                .parse_arch(&space.file.baselines[&name])
                .ok()
                .map(|n| (n, format!("baseline: {name}"), None)),
            Proposal::Mutate(parent) => store
                .candidate(parent)?
                .and_then(|p| space.mutate(&p.derivation, &mut rng).ok())
                .map(|(n, m)| (n, format!("mutation: {}", m.detail), Some(parent))),
        };
        let Some((net, origin, parent)) = built else {
            self.strategy.withdraw();
            return Ok(Proposed::Unbuildable);
        };
        let record = CandidateRecord {
            id,
            derivation: net.term.clone(),
            text: net.text(),
            hashes: Hashes::of(&net.arch),
            parent,
            origin,
            duplicate_of: None,
            params: net.cost.params,
            active_params: net.cost.active_params,
            flops: net.cost.flops,
            steps: settings
                .halving
                .as_ref()
                .map_or(settings.steps, |h| h.steps_at(0, settings.steps)),
        };
        Ok(Proposed::Fresh { net, record })
    }

    /// The next promotion due, as a new candidate with the source's
    /// architecture and the higher rung's steps.
    fn promotion(&mut self, store: &dyn Store, id: u64) -> Result<Option<Job>, SearchError> {
        let (Some(rungs), Some(h)) = (self.rungs.as_mut(), &self.settings.halving) else {
            return Ok(None);
        };
        let Some((bracket, from, root, rung)) = rungs.promote(h.eta) else {
            return Ok(None);
        };
        let src = store.candidate(from)?.ok_or_else(|| {
            SearchError::failed(format!("candidate {from} is missing from the store"), None)
        })?;
        let net = self.space.network(src.derivation.clone()).map_err(|e| {
            SearchError::failed(format!("candidate {from} no longer lowers"), Some(e.into()))
        })?;
        let steps = h.steps_at(rung, self.settings.steps);
        let record = CandidateRecord {
            id,
            origin: format!("promotion to rung {rung} ({steps} steps)"),
            parent: Some(root),
            duplicate_of: None,
            steps,
            ..src
        };
        Ok(Some(Job {
            net,
            record,
            bracket,
            rung,
            root,
        }))
    }

    /// A fresh candidate found new: it starts at its bracket's lowest rung.
    pub fn place(&mut self, net: Network, mut record: CandidateRecord) -> Job {
        let bracket = match (self.rungs.as_mut(), &self.settings.halving) {
            (Some(b), Some(h)) => {
                let b = b.deal();
                record.steps = h.steps_at(b, self.settings.steps);
                b
            }
            _ => 0,
        };
        let root = record.id;
        Job {
            net,
            record,
            bracket,
            rung: bracket,
            root,
        }
    }

    /// A job's score, for the rung it trained at.
    pub fn record(&mut self, job: &Job, score: f64) {
        if let Some(r) = self.rungs.as_mut() {
            r.record(job.bracket, job.rung, job.record.id, score, job.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::halving::Halving;
    use crate::search::strategy::StrategyKind;
    use crate::space::ModelSettings;
    use crate::store::SledStore;

    fn space() -> Space {
        Space::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("spaces/quickstart.ron"))
            .unwrap()
    }

    fn settings(halving: Option<Halving>) -> RunSettings {
        RunSettings {
            name: "t".into(),
            strategy: StrategyKind::Random,
            budget: 10,
            seed: 3,
            workers: 1,
            population: 4,
            tournament: 2,
            steps: 90,
            device: crate::eval::DeviceKind::Cpu,
            halving,
            confirm: None,
            reeval: 0,
            model: Default::default(),
        }
    }

    fn fresh(p: Proposed) -> (Network, CandidateRecord) {
        match p {
            Proposed::Fresh { net, record } => (net, record),
            _ => panic!("expected a fresh candidate"),
        }
    }

    /// A model-strategy pick after 6 trained points (enough for the
    /// surrogate to fit), with `pool` and `random_share` set, from the rng
    /// stream `stream`: the pick's text and origin, and the rng after it.
    fn guided_pick(pool: usize, share: f64, stream: u64) -> (String, String, ChaCha8Rng) {
        let space = space();
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut s = settings(None);
        s.strategy = StrategyKind::Model;
        s.model.pool = pool;
        s.model.random_share = share;
        let strategy = Strategy::new(StrategyKind::Model, 4, 2, Vec::new());
        let mut p = Proposer::new(&space, &s, strategy, None);
        let mut rng = seed::rng(9, "trained", 0);
        for id in 0..6 {
            let net = space.sample(&mut rng).unwrap();
            let f = p.features(&net);
            p.observe(100 + id, f, net.cost.params.ln());
        }
        let mut rng = seed::rng(9, "pick", stream);
        let (net, origin, _) = p.guided(&store, &mut rng).unwrap().unwrap();
        (net.text(), origin, rng)
    }

    /// The space's `search.model.pool` is how many candidates a guided
    /// pick draws and ranks: with a pool of one the pick is the first
    /// sample, whatever the surrogate thinks.
    #[test]
    fn the_model_pool_is_the_space_setting() {
        let space = space();
        let mut rng = seed::rng(9, "pick", 0);
        let first = space.sample(&mut rng).unwrap().text();
        let (one, origin, mut after_one) = guided_pick(1, 0.0, 0);
        assert_eq!(
            (one.as_str(), origin.as_str()),
            (first.as_str(), "model: sample")
        );
        let (_, _, mut after_many) = guided_pick(40, 0.0, 0);
        // The larger pool drew 39 more candidates from the same stream.
        assert_ne!(
            space.sample(&mut after_one).unwrap().text(),
            space.sample(&mut after_many).unwrap().text()
        );
    }

    /// `search.model.random_share` of the picks are plain samples: at 1
    /// every pick is the stream's next sample after the share's draw,
    /// whatever the surrogate would choose; at 0 none is.
    #[test]
    fn a_share_of_model_picks_are_random_samples() {
        let space = space();
        let pool = ModelSettings::default().pool;
        for stream in 0..4 {
            let mut rng = seed::rng(9, "pick", stream);
            let _share_draw: f64 = rng.gen();
            let sample = space.sample(&mut rng).unwrap().text();
            let (text, origin, _) = guided_pick(pool, 1.0, stream);
            assert_eq!((text, origin.as_str()), (sample, "model: random pick"));
            assert_ne!(guided_pick(pool, 0.0, stream).1, "model: random pick");
        }
    }

    #[test]
    fn baselines_come_first_then_samples_seeded_by_id() {
        let (space, settings) = (space(), settings(None));
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let names: Vec<String> = space.file.baselines.keys().cloned().collect();
        let strategy = |names| Strategy::new(StrategyKind::Random, 4, 2, names);
        let mut p = Proposer::new(&space, &settings, strategy(names.clone()), None);
        for name in &names {
            let (_, r) = fresh(p.next(&store, 0).unwrap());
            assert_eq!(r.origin, format!("baseline: {name}"));
            assert_eq!(
                r.text,
                space
                    .parse_arch(&space.file.baselines[name])
                    .unwrap()
                    .text()
            );
        }
        let (_, a) = fresh(p.next(&store, 7).unwrap());
        assert_eq!((a.origin.as_str(), a.steps, a.id), ("sample", 90, 7));
        // The same id draws the same sample, whatever came before.
        let mut q = Proposer::new(&space, &settings, strategy(Vec::new()), None);
        let (_, b) = fresh(q.next(&store, 7).unwrap());
        assert_eq!((a.text, a.hashes), (b.text, b.hashes));
    }

    #[test]
    fn a_due_promotion_comes_before_new_candidates_and_new_ones_are_dealt_to_brackets() {
        let h = Halving {
            brackets: 2,
            ..Halving::default()
        };
        let (space, settings) = (space(), settings(Some(h.clone())));
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let strategy = Strategy::new(StrategyKind::Random, 4, 2, Vec::new());
        let mut p = Proposer::new(&space, &settings, strategy, Some(Brackets::new(&h)));
        // New candidates train the lowest rung's steps until placed; placing
        // deals them in Hyperband's proportions (η = 3, 3 rungs: 9/3 : 3/2,
        // the more aggressive bracket on ties).
        let mut jobs = Vec::new();
        for id in 0..3 {
            let (net, r) = fresh(p.next(&store, id).unwrap());
            assert_eq!(r.steps, 10);
            store.put_candidate(&r).unwrap();
            jobs.push(p.place(net, r));
        }
        let placed: Vec<_> = jobs
            .iter()
            .map(|j| (j.bracket, j.rung, j.record.steps))
            .collect();
        assert_eq!(placed, [(0, 0, 10), (0, 0, 10), (1, 1, 30)]);
        // Bracket 0 has no promotion due until rung 0 holds η results.
        p.record(&jobs[0], 0.2);
        p.record(&jobs[1], 0.9);
        p.record(&jobs[2], 0.1);
        assert!(matches!(p.next(&store, 3).unwrap(), Proposed::Fresh { .. }));
        let (net, r) = fresh(p.next(&store, 4).unwrap());
        store.put_candidate(&r).unwrap();
        let third = p.place(net, r);
        assert_eq!(third.bracket, 0);
        p.record(&third, 0.4);
        let Proposed::Promotion(job) = p.next(&store, 5).unwrap() else {
            panic!("the best of rung 0 is due for promotion");
        };
        assert_eq!(
            (
                job.record.id,
                job.record.parent,
                job.bracket,
                job.rung,
                job.root
            ),
            (5, Some(1), 0, 1, 1)
        );
        assert_eq!(job.record.origin, "promotion to rung 1 (30 steps)");
        assert_eq!(job.record.text, jobs[1].record.text);
        assert!(
            matches!(p.next(&store, 6).unwrap(), Proposed::Fresh { .. }),
            "a promotion is handed out once"
        );
    }

    #[test]
    fn a_mutation_of_a_candidate_the_store_lacks_is_withdrawn() {
        let (space, settings) = (space(), settings(None));
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut strategy = Strategy::new(StrategyKind::Evolution, 1, 1, Vec::new());
        strategy.tell(42, 0.5);
        let mut p = Proposer::new(&space, &settings, strategy, None);
        assert!(matches!(p.next(&store, 1).unwrap(), Proposed::Unbuildable));
    }
}
