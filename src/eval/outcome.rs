//! What an evaluation produces: the record the store keeps and reports show.

use super::run::RouteRecord;
use super::train::{ScoreRule, TrainConfig, Trained};
use crate::arch::Cost;
use crate::routing::stats::RoutingReport;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failed {
        reason: String,
        /// Whether the failure came from the machine (the device, a memory
        /// limit, a panic) rather than the candidate, so that training it
        /// again elsewhere may succeed. Absent (false) in outcomes stored
        /// before it was recorded.
        #[serde(default, skip_serializing_if = "is_false")]
        retry_may_help: bool,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// `"status": "ok"`, or `"status": "failed", "reason": ...`.
    #[serde(flatten)]
    pub status: Status,
    /// What `score` measures: `accuracy` (the task's metric) or
    /// `likelihood` (see `ScoreRule`).
    pub metric: String,
    /// The score on the held-out split (0 for a failed candidate).
    pub score: f64,
    /// The task's metric (exact-match accuracy) on the held-out split,
    /// whatever `score` measures (absent in outcomes stored before it was
    /// recorded apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Positions scored.
    pub scored: usize,
    pub final_loss: f64,
    /// Mean cross-entropy (nats) of the held-out split's scored targets
    /// (absent in outcomes stored before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    /// (step, training loss) at evenly spaced steps.
    pub loss_curve: Vec<(usize, f64)>,
    pub params: f64,
    pub active_params: f64,
    pub flops_per_token: f64,
    pub steps: usize,
    pub tokens: u64,
    /// Whole evaluation (compile, train, score).
    pub wall_secs: f64,
    /// Training tokens per second of training time.
    pub tokens_per_sec: f64,
    /// Achieved training GFLOP/s: 3 × forward FLOPs (forward + backward).
    pub gflops: f64,
    pub device: String,
    /// Routed layers on the held-out split, in execution order.
    pub routes: Vec<RouteRecord>,
    /// Routing traces and statistics (candidates with routed layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingReport>,
}

impl Outcome {
    pub fn new(cost: Cost, cfg: &TrainConfig) -> Outcome {
        Outcome {
            status: Status::Ok,
            metric: cfg.train.score.name().to_string(),
            score: 0.0,
            accuracy: None,
            scored: 0,
            final_loss: f64::NAN,
            test_loss: None,
            loss_curve: Vec::new(),
            params: cost.params,
            active_params: cost.active_params,
            flops_per_token: cost.flops,
            steps: 0,
            tokens: 0,
            wall_secs: 0.0,
            tokens_per_sec: 0.0,
            gflops: 0.0,
            device: cfg.device.name(),
            routes: Vec::new(),
            routing: None,
        }
    }

    /// Failed for a reason of the candidate's own: any machine would fail
    /// it alike.
    pub fn failed(self, reason: String) -> Outcome {
        self.failed_with(reason, false)
    }

    /// Failed for a reason of this machine's (see `Status::Failed`).
    pub fn failed_here(self, reason: String) -> Outcome {
        self.failed_with(reason, true)
    }

    fn failed_with(mut self, reason: String, retry_may_help: bool) -> Outcome {
        self.status = Status::Failed {
            reason,
            retry_may_help,
        };
        self.score = 0.0;
        self
    }

    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }

    pub fn finish(mut self, t: Trained, seq: usize, batch: usize, rule: ScoreRule) -> Outcome {
        self.score = rule.of(&t);
        self.accuracy = Some(t.score);
        self.scored = t.scored;
        self.final_loss = t.final_loss;
        self.test_loss = Some(t.test_loss);
        self.loss_curve = t.curve;
        self.steps = t.steps;
        self.tokens = (t.steps * batch * seq) as u64;
        let secs = t.train_secs.max(1e-9);
        self.tokens_per_sec = self.tokens as f64 / secs;
        self.gflops = 3.0 * self.flops_per_token * self.tokens_per_sec / 1e9;
        self.routes = t.routes;
        self.routing = t.routing;
        self
    }

    /// A few lines for a terminal.
    pub fn report(&self) -> String {
        let mut s = String::new();
        match &self.status {
            Status::Ok => {
                s.push_str(&format!("{} {:.4}", self.metric, self.score));
                if let (Some(a), true) = (self.accuracy, self.metric != "accuracy") {
                    s.push_str(&format!("  (accuracy {a:.4})"));
                }
            }
            Status::Failed { reason, .. } => s.push_str(&format!("FAILED: {reason}")),
        }
        s.push_str(&format!(
            "\nfinal loss {:.4}  steps {}  tokens {}\nparams {}  active {}  flops/token {}\nwall {:.2}s  {:.0} tokens/s  {:.3} GFLOP/s on {}",
            self.final_loss,
            self.steps,
            self.tokens,
            crate::fmt::fmt_count(self.params),
            crate::fmt::fmt_count(self.active_params),
            crate::fmt::fmt_count(self.flops_per_token),
            self.wall_secs,
            self.tokens_per_sec,
            self.gflops,
            self.device
        ));
        match &self.routing {
            Some(rep) => {
                for st in &rep.stats {
                    s.push('\n');
                    s.push_str(&layer_line(st));
                }
                for c in &rep.consistency {
                    s.push_str(&format!(
                        "\n  layer {} steps {}→{}: top-k Jaccard {:.3}, top-1 changed {:.1}%",
                        c.layer,
                        c.from_step,
                        c.to_step,
                        c.jaccard,
                        100.0 * c.top1_changed
                    ));
                }
            }
            None => {
                for (i, r) in self.routes.iter().enumerate() {
                    s.push_str(&format!(
                        "\nrouted layer {i} ({}): {} tokens, load {:?}, dropped {}",
                        r.kind, r.tokens, r.load, r.dropped
                    ));
                }
            }
        }
        s
    }
}

/// One routed layer's statistics on a few lines.
fn layer_line(st: &crate::routing::stats::LayerStats) -> String {
    let mut s = format!(
        "routed layer {} ({}{}, {} tokens traced): ",
        st.layer,
        st.kind,
        if st.noncausal {
            ", non-causal: routes using later tokens"
        } else {
            ""
        },
        st.tokens
    );
    if st.kind == "mod" || st.kind == "layer_skip" {
        s.push_str(&format!(
            "processed {:.1}%, mean gate {:.3}, compute vs dense {:.2}",
            100.0 * st.processed_fraction,
            st.router_confidence,
            st.compute_vs_dense
        ));
        return s;
    }
    s.push_str(&format!(
        "load {:?}\n  CV {:.3}  max/mean {:.2}  MaxVio {:.2}  load entropy {:.3}  dead {}  dropped {:.1}% (by position {})\n  experts/token {:.2} {:?}  router entropy {:.3}  confidence {:.3}  compute vs dense {:.2}",
        st.load,
        st.cv,
        st.max_over_mean,
        st.max_vio,
        st.load_entropy,
        st.dead_experts,
        100.0 * st.dropped_fraction,
        st.dropped_by_position
            .iter()
            .map(|v| format!("{:.0}%", 100.0 * v))
            .collect::<Vec<_>>()
            .join("/"),
        st.mean_experts_per_token,
        st.experts_per_token,
        st.router_entropy,
        st.router_confidence,
        st.compute_vs_dense
    ));
    if let (Some(mi), Some(base)) = (st.domain_mi, st.domain_mi_shuffled) {
        s.push_str(&format!(
            "\n  domain–expert mutual information {mi:.3} nats (shuffled domains {base:.3})"
        ));
    }
    s
}
