//! Parameter values as they appear in grammar files and text forms.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One parameter value: `4`, `1.25`, `true`, `gelu`.
///
/// Untagged so that grammar files can write plain RON literals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Name(String),
}

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Integers are accepted where a float is wanted (`capacity: 1` means 1.0).
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_name(&self) -> Option<&str> {
        match self {
            Value::Name(s) => Some(s),
            _ => None,
        }
    }

    /// Equality used when matching a hand-written value against grammar choices:
    /// `1` and `1.0` are the same capacity.
    pub fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
                self.as_float() == other.as_float()
            }
            _ => self == other,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Name(_) => "name",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            // Always keep a decimal point so the text form parses back as a float.
            Value::Float(x) => {
                if x.fract() == 0.0 && x.abs() < 1e15 {
                    write!(f, "{x:.1}")
                } else {
                    write!(f, "{x}")
                }
            }
            Value::Name(s) => write!(f, "{s}"),
        }
    }
}

/// Parameter lists equal up to number spelling (`1` and `1.0`), as [`Value::same`].
pub(crate) fn same_params(a: &[(String, Value)], b: &[(String, Value)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((n, v), (m, w))| n == m && v.same(w))
}

/// `params` (sorted by name) with `name` set to `v`, kept sorted.
pub(crate) fn with_param(
    params: &[(String, Value)],
    name: &str,
    v: &Value,
) -> Vec<(String, Value)> {
    let mut p = params.to_vec();
    match p.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = v.clone(),
        None => {
            p.push((name.to_string(), v.clone()));
            p.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }
    p
}
