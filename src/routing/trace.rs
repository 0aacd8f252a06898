//! Routing traces: which tokens went to which experts, with their gates, for
//! one routed layer over one batch. Stored with the outcome (compact: CSR
//! lists, not a dense tokens × experts matrix) and read back by `simulate`
//! and the reports.

use serde::{Deserialize, Serialize};

/// One routed layer's decisions over `tokens` tokens (batch × seq, row-major).
///
/// For a mixture-of-depths or layer-skip router there is one "expert": a
/// token listed under it was processed, the others rode the residual. For
/// mixture-of-heads the experts are the routed heads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerTrace {
    /// Index among the candidate's routed layers, in execution order.
    pub layer: usize,
    /// `moe`, `mod`, `layer_skip` or `moh`.
    pub kind: String,
    /// `token_choice`, `expert_choice`, `top_p`, `scalar`.
    pub router: String,
    /// Routed experts (heads for `moh`, 1 for `mod`/`layer_skip`).
    pub experts: usize,
    /// Shared experts every token also visits (not listed per token).
    pub shared: usize,
    pub top_k: usize,
    pub capacity_factor: f64,
    /// Tokens per sequence.
    pub seq: usize,
    /// Tokens in the trace.
    pub tokens: usize,
    /// Hidden width of the layer's input (bytes moved per token = width × 4).
    pub width: usize,
    /// Token t's experts are `experts_of[offsets[t]..offsets[t + 1]]`.
    pub offsets: Vec<u32>,
    pub experts_of: Vec<u16>,
    /// Gate value of each listed assignment (router weight for `mod`).
    #[serde(serialize_with = "short_floats")]
    pub gates: Vec<f32>,
    /// (token, expert) assignments the router chose but capacity dropped.
    pub dropped: Vec<(u32, u16)>,
    /// Mean over tokens of the router distribution's entropy, −Σ p log p
    /// (nats; 0 for a scalar router).
    #[serde(default)]
    pub router_entropy: f64,
    /// Mean over tokens of the largest router probability (for a scalar
    /// router: the mean gate of processed tokens).
    #[serde(default)]
    pub router_confidence: f64,
}

impl LayerTrace {
    /// The experts (and gates) token `t` was processed by.
    pub fn of_token(&self, t: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let (a, b) = (self.offsets[t] as usize, self.offsets[t + 1] as usize);
        self.experts_of[a..b]
            .iter()
            .zip(&self.gates[a..b])
            .map(|(&e, &g)| (e as usize, g))
    }

    /// Tokens processed per expert.
    pub fn load(&self) -> Vec<u64> {
        let mut load = vec![0u64; self.experts.max(1)];
        for &e in &self.experts_of {
            load[e as usize] += 1;
        }
        load
    }

    /// Keeps the first `tokens` tokens.
    pub fn truncate(&mut self, tokens: usize) {
        if tokens >= self.tokens {
            return;
        }
        let end = self.offsets[tokens] as usize;
        self.offsets.truncate(tokens + 1);
        self.experts_of.truncate(end);
        self.gates.truncate(end);
        self.dropped.retain(|&(t, _)| (t as usize) < tokens);
        self.tokens = tokens;
    }

    /// Appends a token's assignments.
    pub fn push_token(&mut self, assigned: impl IntoIterator<Item = (usize, f32)>) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        for (e, g) in assigned {
            self.experts_of.push(e as u16);
            // Four decimals are plenty for statistics and simulation and
            // keep stored traces small.
            self.gates.push((g * 1e4).round() / 1e4);
        }
        self.offsets.push(self.experts_of.len() as u32);
        self.tokens = self.offsets.len() - 1;
    }
}

/// Gates as f64 with four decimals: stored outcomes go through
/// `serde_json::Value`, which would otherwise print every f32 as a
/// 17-digit f64.
fn short_floats<S: serde::Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for &g in v {
        seq.serialize_element(&((g as f64 * 1e4).round() / 1e4))?;
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_round_trip() {
        let mut t = LayerTrace {
            kind: "moe".into(),
            experts: 3,
            ..LayerTrace::default()
        };
        t.push_token([(0, 0.7), (2, 0.30004)]);
        t.push_token([]);
        t.push_token([(2, 1.0)]);
        assert_eq!(t.tokens, 3);
        assert_eq!(t.load(), vec![1, 0, 2]);
        assert_eq!(t.of_token(1).count(), 0);
        assert_eq!(t.of_token(2).collect::<Vec<_>>(), vec![(2, 1.0)]);
        assert_eq!(t.gates[1], 0.3);
    }
}
