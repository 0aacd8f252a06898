//! `archgram cuda-kernels` (hidden; CUDA builds only): compiles every
//! kernel dfdx compiles at run time with NVRTC and the headers embedded in
//! this binary, as a GPU machine would the first time a candidate needs
//! one. NVRTC runs on the CPU, so this checks on any machine, from any
//! folder, that a copied binary finds its headers.

use super::CliError;
use dfdx::tensor::cuda_nvrtc::{compile_with, options, runtime_kernels, HEADERS};
use rayon::prelude::*;
use std::io::Write;

pub fn cuda_kernels(omit: &[String], only: &[String], out: &mut dyn Write) -> Result<(), CliError> {
    for name in omit {
        if !HEADERS.iter().any(|h| h.0 == name) {
            return Err(CliError::bad(format!(
                "--omit {name}: not an embedded header"
            )));
        }
    }
    let headers: Vec<(&str, &str)> = HEADERS
        .iter()
        .copied()
        .filter(|h| !omit.iter().any(|o| o == h.0))
        .collect();
    let mut kernels = runtime_kernels();
    for name in only {
        if !kernels.iter().any(|k| &k.module == name) {
            return Err(CliError::bad(format!(
                "--module {name}: not a runtime kernel"
            )));
        }
    }
    if !only.is_empty() {
        kernels.retain(|k| only.contains(&k.module));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-parameters.
    let _ = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    writeln!(
        out,
        "NVRTC {major}.{minor}, options: {}",
        options().join(" ")
    )?;
    let listed: Vec<String> = headers
        .iter()
        .map(|(n, t)| format!("{n} ({} bytes)", t.len()))
        .collect();
    writeln!(out, "embedded headers: {}", listed.join(", "))?;
    // Independent programs: NVRTC compiles them on as many threads.
    let failed: Vec<String> = kernels
        .par_iter()
        .filter_map(|k| compile_with(&k.module, &k.source, &headers).err())
        .map(|e| e.to_string())
        .collect();
    for f in &failed {
        writeln!(out, "{f}")?;
    }
    let ok = kernels.len() - failed.len();
    writeln!(out, "compiled {ok} of {} runtime kernels", kernels.len())?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::runtime(format!(
            "{} of {} runtime kernels did not compile",
            failed.len(),
            kernels.len()
        )))
    }
}
