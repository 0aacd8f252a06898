//! The CUDA build without a GPU: the kernels dfdx compiles at run time
//! compile with NVRTC (which runs on the CPU) from a copy of the binary
//! that cannot reach the folders the build read headers from, and a GPU
//! that does not open is a clear error. CI builds against NVIDIA's wheels
//! and a stand-in driver (scripts/cuda.sh).
#![cfg(feature = "cuda")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// Every runtime kernel module dfdx can compile (see
/// `dfdx::tensor::cuda_nvrtc::runtime_kernels`).
const KERNELS: usize = 211;

/// The folders the build read the kernels' headers from: dfdx's build
/// output folders and the CUDA toolkit's include folder (upstream dfdx
/// passed both to NVRTC), and dfdx's sources (the .cuh headers).
fn build_folders() -> Vec<PathBuf> {
    let mut dirs = named_folders();
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/dfdx/src"));
    dirs
}

/// The build folders no string in the binary may name: dfdx's build output
/// folders and the CUDA include folder, as it is named and as it is. (Its
/// sources' paths are in the debug information.)
fn named_folders() -> Vec<PathBuf> {
    let exe = Path::new(env!("CARGO_BIN_EXE_archgram"));
    let build = exe.parent().unwrap().join("build");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&build)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("dfdx-") && p.join("out").is_dir()
        })
        .map(|p| p.join("out"))
        .collect();
    assert!(
        !dirs.is_empty(),
        "no dfdx build folder under {}",
        build.display()
    );
    let root = std::env::var("CUDA_ROOT")
        .ok()
        .or(option_env!("CUDA_ROOT").map(String::from))
        .expect("CUDA_ROOT: the toolkit the build used (`eval \"$(scripts/cuda.sh)\"` sets it)");
    let include = Path::new(&root).join("include");
    if let Ok(real) = include.canonicalize() {
        dirs.push(real);
    }
    dirs.push(include);
    dirs
}

/// The binary, copied into a fresh folder, and an empty folder to run it
/// in (NVRTC looks for a header it was not given in the current folder).
struct Copied {
    _dir: tempfile::TempDir,
    exe: PathBuf,
    cwd: PathBuf,
}

/// Copying the binary and starting a process take turns. A child forked
/// while another test's thread still holds its copy open for writing keeps
/// that descriptor until it execs, and running the copy in that window
/// fails with ETXTBSY ("Text file busy"): CI met it once.
static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// `cmd`'s output, started in its turn (see [`TURN`]).
fn try_output(cmd: &mut Command) -> std::io::Result<Output> {
    let child = {
        let _turn = turn();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?
    };
    child.wait_with_output()
}

fn output(cmd: &mut Command) -> Output {
    try_output(cmd).unwrap()
}

fn copied() -> Copied {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("archgram");
    {
        let _turn = turn();
        std::fs::copy(env!("CARGO_BIN_EXE_archgram"), &exe).unwrap();
    }
    let cwd = dir.path().join("empty");
    std::fs::create_dir(&cwd).unwrap();
    Copied {
        _dir: dir,
        exe,
        cwd,
    }
}

/// Whether `unshare` gives this process a mount namespace of its own (as
/// root, or through a user namespace).
fn unshare_args() -> Option<Vec<&'static str>> {
    [vec!["-m"], vec!["-r", "-m"]].into_iter().find(|a| {
        try_output(Command::new("unshare").args(a).arg("true")).is_ok_and(|o| o.status.success())
    })
}

/// Runs the copied binary with `args` from the empty folder, with the
/// build folders covered by empty file systems where this machine allows
/// a private mount namespace. Whether they were covered, and the output.
fn run_hidden(c: &Copied, args: &[&str]) -> (bool, Output) {
    let Some(unshare) = unshare_args() else {
        let o = output(Command::new(&c.exe).args(args).current_dir(&c.cwd));
        return (false, o);
    };
    // mount over each folder, check it is empty, then run the binary.
    let script = r#"
        n=$1; shift
        for i in $(seq "$n"); do
            mount -t tmpfs tmpfs "$1" && [ -z "$(ls -A "$1")" ] || exit 97
            shift
        done
        exec "$@"
    "#;
    let mut dirs: Vec<PathBuf> = build_folders()
        .into_iter()
        .map(|d| d.canonicalize().unwrap_or(d))
        .collect();
    dirs.sort();
    dirs.dedup();
    let o = output(
        Command::new("unshare")
            .args(&unshare)
            .args(["sh", "-c", script, "sh"])
            .arg(dirs.len().to_string())
            .args(&dirs)
            .arg(&c.exe)
            .args(args)
            .current_dir(&c.cwd),
    );
    assert_ne!(
        o.status.code(),
        Some(97),
        "cannot cover {dirs:?}: {}",
        text(&o.stderr)
    );
    (true, o)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The copied binary holds no path of a folder the build read headers
/// from: upstream dfdx compiled dfdx's build output folder and the CUDA
/// include folder into it as NVRTC include paths.
#[test]
fn the_binary_names_no_build_folder() {
    let bytes = std::fs::read(env!("CARGO_BIN_EXE_archgram")).unwrap();
    for dir in named_folders() {
        let dir = dir.to_string_lossy().into_owned();
        assert!(
            !bytes.windows(dir.len()).any(|w| w == dir.as_bytes()),
            "the binary names {dir}"
        );
    }
}

/// Every runtime kernel compiles from the copied binary, from an empty
/// folder, with the build folders covered; NVRTC is given no include path.
#[test]
fn every_runtime_kernel_compiles_from_a_copied_binary() {
    let c = copied();
    let (hidden, o) = run_hidden(&c, &["cuda-kernels"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", text(&o.stderr));
    assert!(
        out.contains(&format!("compiled {KERNELS} of {KERNELS} runtime kernels")),
        "{out}"
    );
    let options = out.lines().next().unwrap();
    assert!(options.starts_with("NVRTC 12."), "{options}");
    assert!(
        !options.contains("include") && !options.contains("-I"),
        "{options}"
    );
    if !hidden {
        common::skip_here(
            "covering the build folders in every_runtime_kernel_compiles_from_a_copied_binary",
            "no private mount namespace here (unshare refused); the binary still ran from a copy in an empty folder, and the_binary_names_no_build_folder checks it holds no build path",
        );
    }
}

/// The check fails when a header is not embedded, with NVRTC's log: each
/// embedded header is needed, and none is found on disk instead.
#[test]
fn a_kernel_whose_header_is_not_embedded_fails_with_nvrtcs_log() {
    let c = copied();
    for header in [
        "cuda_utils.cuh",
        "compatibility.cuh",
        "cuda_fp16.h",
        "cuda_fp16.hpp",
        "vector_types.h",
        "vector_functions.h",
    ] {
        let (_, o) = run_hidden(
            &c,
            &[
                "cuda-kernels",
                "--omit",
                header,
                "--module",
                "reshape_fwd_float",
            ],
        );
        let out = text(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{header}: {out}");
        assert!(
            out.contains(&format!("cannot open source file \"{header}\"")),
            "{header}: {out}"
        );
        assert!(
            out.contains("compiled 0 of 1 runtime kernels"),
            "{header}: {out}"
        );
        assert!(text(&o.stderr).contains("1 of 1 runtime kernels did not compile"));
    }
    let (_, o) = run_hidden(&c, &["cuda-kernels", "--omit", "stdio.h"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

/// A GPU that does not open stops a command before any work, with exit 1
/// and the driver's words (here the stand-in driver's: there is no GPU).
#[test]
fn a_gpu_that_does_not_open_is_exit_1_with_the_drivers_error() {
    let c = copied();
    let runs = c.cwd.join("runs");
    let space = Path::new(env!("CARGO_MANIFEST_DIR")).join("spaces/quickstart.ron");
    let space = space.to_str().unwrap();
    let runs = runs.to_str().unwrap();
    for (args, flag) in [
        (
            vec![
                "search", "--space", space, "--budget", "1", "--steps", "1", "--no-tui", "--runs",
                runs, "--device", "cuda:1",
            ],
            "--device cuda:1: cannot open CUDA device 1: CUDA_ERROR_",
        ),
        (
            vec![
                "eval", "--space", space, "--sample", "1", "--steps", "1", "--device", "cuda",
            ],
            "--device cuda: cannot open CUDA device 0: CUDA_ERROR_",
        ),
    ] {
        let o = output(Command::new(&c.exe).args(&args).current_dir(&c.cwd));
        let err = text(&o.stderr);
        if !err.contains("stand-in libcuda.so.1") {
            common::skip_here(
                "a_gpu_that_does_not_open_is_exit_1_with_the_drivers_error",
                "NVIDIA's driver is installed here, not scripts/cuda.sh's stand-in",
            );
            return;
        }
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("error: {flag}")),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // Nothing was started: no run folder.
        assert!(!Path::new(runs).exists(), "{args:?}");
    }
}
