//! Search: strategies (random, regularised evolution), the run loop with
//! its cache, Pareto bookkeeping and run folders. Sees candidates only as
//! derivations, hashes and outcomes.

mod confirm;
mod dedupe;
pub mod fidelity;
mod halving;
pub mod journal;
pub mod model;
pub mod pareto;
mod propose;
mod recorder;
mod run;
mod rundir;
mod settings;
pub mod shared;
mod strategy;

pub use confirm::{
    ranked, standings, table as confirm_table, train_trials, trial_seed, ConfirmTable, Ranked,
    Standing, TrialJob, CONFIRM, REEVAL,
};
pub use fidelity::{FidelityPlan, FidelityReport};
pub use halving::{Brackets, Halving, Rungs};
pub use run::{run, run_shared, Ending};
pub use rundir::{check_run_name, frozen_space, hash_recipes, run_meta, RunDir};
pub use settings::{score_of, train_config, Confirm, RunControl, RunSettings, SearchError};
pub use strategy::{Proposal, Strategy, StrategyKind};
