//! The terminal dashboard (ratatui): state built from search events, a pure
//! draw function of that state, and the loop that feeds it from a running
//! search or a run's event log. Reads events only, never the store.

mod app;
mod draw;
mod state;

pub use app::{run_dashboard, Feed, Hooks};
pub use draw::draw;
pub use state::{arch_tree, score as score_of_cand, Action, Cand, Dashboard, Focus, KEPT};
