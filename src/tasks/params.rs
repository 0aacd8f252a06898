//! Task parameters: declaration, defaults, range checks and typed access.

use std::collections::BTreeMap;

use super::TaskError;

/// One numeric parameter of a task. Parameters are `f64` in the spec file so that one
/// map type serves every task; integer parameters reject fractional values.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ParamInfo {
    pub name: &'static str,
    pub default: f64,
    pub help: &'static str,
    /// Inclusive bounds; cross-parameter constraints are checked by each task.
    pub min: f64,
    pub max: f64,
    pub integer: bool,
}

impl ParamInfo {
    pub(super) const fn int(
        name: &'static str,
        default: f64,
        min: f64,
        max: f64,
        help: &'static str,
    ) -> Self {
        ParamInfo {
            name,
            default,
            help,
            min,
            max,
            integer: true,
        }
    }

    pub(super) const fn real(
        name: &'static str,
        default: f64,
        min: f64,
        max: f64,
        help: &'static str,
    ) -> Self {
        ParamInfo {
            name,
            default,
            help,
            min,
            max,
            integer: false,
        }
    }

    fn range_text(&self) -> String {
        if self.integer {
            format!("must be an integer from {} to {}", self.min, self.max)
        } else {
            format!("must be a number from {} to {}", self.min, self.max)
        }
    }
}

// Shared declarations, so that every task documents these the same way.
pub(super) const fn train_examples(default: f64) -> ParamInfo {
    ParamInfo::int(
        "train_examples",
        default,
        1.0,
        1_000_000.0,
        "number of generated training sequences (sampled with replacement)",
    )
}

/// `seq_len` of the language-modelling tasks on the user's data.
pub(super) const fn lm_seq_len() -> ParamInfo {
    ParamInfo::int(
        "seq_len",
        64.0,
        1.0,
        65536.0,
        "model input length; windows hold seq_len+1 tokens (characters for char_lm) and are shifted",
    )
}

/// `test_examples` of the language-modelling tasks on the user's data.
pub(super) const fn lm_test_examples() -> ParamInfo {
    ParamInfo::int(
        "test_examples",
        256.0,
        1.0,
        100_000.0,
        "maximum number of held-out windows (spread evenly over the held-out tokens)",
    )
}

pub(super) const fn test_examples(default: f64) -> ParamInfo {
    ParamInfo::int(
        "test_examples",
        default,
        1.0,
        100_000.0,
        "number of held-out test sequences, each different from every training sequence",
    )
}

/// Parameters of one task after defaults and range checks.
#[derive(Debug)]
pub(crate) struct Params {
    task: &'static str,
    values: Vec<(&'static str, f64)>,
}

impl Params {
    /// Checks user values against the declarations and fills in defaults.
    pub(super) fn resolve(
        task: &'static str,
        decls: &'static [ParamInfo],
        given: &BTreeMap<String, f64>,
    ) -> Result<Self, TaskError> {
        if let Some(unknown) = given.keys().find(|k| !decls.iter().any(|d| d.name == *k)) {
            return Err(TaskError::UnknownParam {
                task: task.to_string(),
                param: unknown.clone(),
                valid: decls.iter().map(|d| d.name).collect::<Vec<_>>().join(", "),
            });
        }
        let mut values = Vec::with_capacity(decls.len());
        for d in decls {
            let v = given.get(d.name).copied().unwrap_or(d.default);
            let ok = v.is_finite() && v >= d.min && v <= d.max && (!d.integer || v.fract() == 0.0);
            if !ok {
                return Err(TaskError::BadValue {
                    task: task.to_string(),
                    param: d.name.to_string(),
                    value: v,
                    reason: d.range_text(),
                });
            }
            values.push((d.name, v));
        }
        Ok(Params { task, values })
    }

    /// Declared parameter value. Asking for an undeclared name is a bug in the task
    /// module (the tests build every task), not a user error.
    pub(super) fn get(&self, name: &str) -> f64 {
        match self.values.iter().find(|(n, _)| *n == name) {
            Some(&(_, v)) => v,
            None => panic!("task `{}` reads undeclared parameter `{name}`", self.task),
        }
    }

    /// Integer parameter; range checks in `resolve` keep the cast exact.
    pub(super) fn usize(&self, name: &str) -> usize {
        self.get(name) as usize
    }

    /// 0/1 parameter.
    pub(super) fn flag(&self, name: &str) -> bool {
        self.get(name) != 0.0
    }

    /// Error for a cross-parameter constraint on `name`.
    pub(super) fn bad(&self, name: &str, reason: impl Into<String>) -> TaskError {
        TaskError::BadValue {
            task: self.task.to_string(),
            param: name.to_string(),
            value: self.get(name),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECLS: &[ParamInfo] = &[
        ParamInfo::int("vocab", 16.0, 4.0, 64.0, "v"),
        ParamInfo::real("frac", 0.5, 0.0, 1.0, "f"),
    ];

    fn given(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn defaults_fill_in() {
        let p = Params::resolve("t", DECLS, &given(&[("frac", 0.25)])).unwrap();
        assert_eq!(p.usize("vocab"), 16);
        assert_eq!(p.get("frac"), 0.25);
    }

    #[test]
    fn unknown_param_is_named_with_valid_list() {
        let err = Params::resolve("t", DECLS, &given(&[("vocb", 3.0)])).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TaskError::UnknownParam { .. }));
        assert!(
            msg.contains("`vocb`") && msg.contains("vocab, frac"),
            "{msg}"
        );
    }

    #[test]
    fn bad_values_state_the_range() {
        for bad in [3.0, 65.0, 16.5, f64::NAN, f64::INFINITY] {
            let err = Params::resolve("t", DECLS, &given(&[("vocab", bad)])).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, TaskError::BadValue { .. }));
            assert!(msg.contains("integer from 4 to 64"), "{msg}");
        }
        let err = Params::resolve("t", DECLS, &given(&[("frac", -0.1)])).unwrap_err();
        assert!(err.to_string().contains("number from 0 to 1"));
    }
}
