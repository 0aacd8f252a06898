//! Exports of searched architectures that other tools read. The run-level
//! formats (RON/JSON, Markdown) live with the `export` command; this module
//! holds the Graphviz renderer and the PyTorch code generator and
//! safetensors writer.
//!
//! It reads `eval`'s compiled `Program` and host `Weights` as data: the
//! exported module must reproduce the evaluator's parameter layout name for
//! name, and re-deriving that layout here would be a second compiler to
//! keep in step. It runs nothing of `eval` (the command computes the probe
//! logits) and knows nothing of runs, stores or tasks.

pub mod dot;
pub mod pytorch;
