//! The hardware numbers the expert-parallel cost model runs on, read from a
//! small RON file (`archgram simulate --hw FILE`). Every field has a
//! documented default, so a file only names what it changes.

use crate::diag::{find_in_code, from_ron, read_text, Pos, SourceError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One accelerator and its links. The defaults model an NVIDIA A100 SXM
/// node (DGX A100): 312 dense bf16 TFLOP/s, NVLink 3 at 300 GB/s per
/// direction inside a node of 8, and one 200 Gb/s HDR InfiniBand NIC
/// (25 GB/s) per GPU between nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hardware {
    /// Bytes per activation element sent in the all-to-alls (2: bf16; 1: FP8 dispatch).
    pub bytes_per_elem: f64,
    /// Peak dense throughput per device, TFLOP/s.
    pub peak_tflops: f64,
    /// Fraction of peak the expert GEMMs reach (model FLOPs utilisation).
    pub mfu: f64,
    /// Per-peer message latency of an all-to-all, microseconds.
    pub alpha_us: f64,
    /// Per-device bandwidth to devices of the same node, GB/s (10⁹ bytes/s), per direction.
    pub intra_gbps: f64,
    /// Per-device bandwidth to other nodes, GB/s, per direction.
    pub inter_gbps: f64,
    /// Devices per node when `--nodes` is not given.
    pub gpus_per_node: usize,
}

impl Default for Hardware {
    fn default() -> Self {
        Hardware {
            bytes_per_elem: 2.0,
            peak_tflops: 312.0,
            mfu: 0.5,
            alpha_us: 5.0,
            intra_gbps: 300.0,
            inter_gbps: 25.0,
            gpus_per_node: 8,
        }
    }
}

/// A hardware setting out of its range: which field, and the rule it
/// breaks.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct BadField {
    pub field: &'static str,
    pub message: String,
}

impl Hardware {
    /// Reads a hardware file. Syntax errors and unknown fields point at
    /// file:line:col; impossible values name the field.
    pub fn load(path: &Path) -> Result<Hardware, SourceError> {
        let text = read_text(path)?;
        Self::parse(&text).map_err(|e| e.in_file(path))
    }

    /// Parses the RON text of a hardware file (`Hardware(...)` or `(...)`).
    pub fn parse(text: &str) -> Result<Hardware, SourceError> {
        let hw: Hardware = ron::from_str(text).map_err(|e| {
            let mut e = from_ron(e, Path::new(""), text);
            e.file = None;
            e
        })?;
        hw.validate().map_err(|b| {
            // Point at the field at fault, when the file sets it.
            let mut e = SourceError::new(b.message);
            if let Some(at) = find_in_code(text, b.field) {
                e = e.at(Pos::of_offset(text, at));
            }
            e
        })?;
        Ok(hw)
    }

    /// Every number positive and finite (`mfu` at most 1).
    pub fn validate(&self) -> Result<(), BadField> {
        let bad = |field, rule: &str, v: f64| {
            Err(BadField {
                field,
                message: format!("`{field}` {rule}, got {v}"),
            })
        };
        let fields = [
            ("bytes_per_elem", self.bytes_per_elem),
            ("peak_tflops", self.peak_tflops),
            ("mfu", self.mfu),
            ("intra_gbps", self.intra_gbps),
            ("inter_gbps", self.inter_gbps),
        ];
        for (name, v) in fields {
            if !(v.is_finite() && v > 0.0) {
                return bad(name, "must be a positive number", v);
            }
        }
        if self.mfu > 1.0 {
            return bad("mfu", "is a fraction of peak (0, 1]", self.mfu);
        }
        if !(self.alpha_us.is_finite() && self.alpha_us >= 0.0) {
            return bad("alpha_us", "must be ≥ 0", self.alpha_us);
        }
        if self.gpus_per_node == 0 {
            return bad("gpus_per_node", "must be at least 1", 0.0);
        }
        Ok(())
    }

    /// Sustained FLOP/s of one device.
    pub fn flops_per_s(&self) -> f64 {
        self.peak_tflops * 1e12 * self.mfu
    }

    pub fn alpha_s(&self) -> f64 {
        self.alpha_us * 1e-6
    }

    pub fn intra_bytes_per_s(&self) -> f64 {
        self.intra_gbps * 1e9
    }

    pub fn inter_bytes_per_s(&self) -> f64 {
        self.inter_gbps * 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_partial_files() {
        assert_eq!(Hardware::parse("()").unwrap(), Hardware::default());
        let h = Hardware::parse("Hardware(peak_tflops: 989, inter_gbps: 50)").unwrap();
        assert_eq!(h.peak_tflops, 989.0);
        assert_eq!(h.inter_gbps, 50.0);
        assert_eq!(h.mfu, 0.5);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_located() {
        let e = Hardware::parse("(\n  mfu: 0.4,\n  peak_tflop: 10,\n)").unwrap_err();
        assert_eq!(e.pos.map(|p| p.line), Some(3), "{e}");
        assert!(e.to_string().contains("peak_tflop"), "{e}");
        let e = Hardware::parse("(\n  mfu: 1.5,\n)").unwrap_err();
        assert_eq!(e.pos.map(|p| p.line), Some(2), "{e}");
        let e = Hardware::parse("(\n  inter_gbps: 8,\n  gpus_per_node: 0,\n)").unwrap_err();
        assert_eq!(e.pos.map(|p| p.line), Some(3), "{e}");
        assert!(Hardware::parse("(intra_gbps: -1)").is_err());
    }

    #[test]
    fn a_bad_value_names_its_field_as_a_value() {
        let field = |h: Hardware| h.validate().unwrap_err().field;
        let d = Hardware::default;
        assert_eq!(field(Hardware { mfu: 1.5, ..d() }), "mfu");
        assert_eq!(
            field(Hardware {
                alpha_us: -1.0,
                ..d()
            }),
            "alpha_us"
        );
        assert_eq!(
            field(Hardware {
                gpus_per_node: 0,
                ..d()
            }),
            "gpus_per_node"
        );
        assert_eq!(
            field(Hardware {
                inter_gbps: f64::NAN,
                ..d()
            }),
            "inter_gbps"
        );
        assert_eq!(d().validate(), Ok(()));
    }
}
