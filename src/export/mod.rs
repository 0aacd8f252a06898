//! Exports of searched architectures that other tools read. The run-level
//! formats (RON/JSON, Graphviz, Markdown) live with the `export` command;
//! this module holds the PyTorch code generator and safetensors writer.

pub mod pytorch;
