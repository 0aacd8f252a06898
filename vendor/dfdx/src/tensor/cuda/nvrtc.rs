//! archgram: NVRTC compilation of the kernels dfdx compiles at run time,
//! with every header they include compiled into the binary and handed to
//! NVRTC by name. Upstream dfdx 0.13 passed include paths fixed at build
//! time (the CUDA toolkit's include folder and cargo's build output
//! folder), so a binary copied to another machine could not compile them.
//! Nothing here names a folder: NVRTC gets no include path at all.

use cudarc::nvrtc::{result, sys, Ptx};
use cudarc::types::CudaTypeName;
use std::ffi::{c_char, c_int, CString};
use std::string::String;
use std::vec::Vec;

/// The headers the runtime kernels include, under the names they include
/// them by.
pub const HEADERS: &[(&str, &str)] = &[
    (
        "cuda_utils.cuh",
        include_str!("../../tensor_ops/utilities/cuda_utils.cuh"),
    ),
    (
        "compatibility.cuh",
        include_str!("../../tensor_ops/utilities/compatibility.cuh"),
    ),
    // NVIDIA's half-precision headers, copied from the CUDA toolkit the
    // build uses (build.rs). The CUDA EULA's Attachment A lists
    // cuda_fp16.h and cuda_fp16.hpp among the files an application may
    // redistribute.
    (
        "cuda_fp16.h",
        include_str!(concat!(env!("OUT_DIR"), "/cuda_fp16.h")),
    ),
    (
        "cuda_fp16.hpp",
        include_str!(concat!(env!("OUT_DIR"), "/cuda_fp16.hpp")),
    ),
    // cuda_fp16.h includes these two; NVRTC defines their types and
    // functions (float2, make_float2, ...) itself, so they can be empty.
    // Empty rather than NVIDIA's: the EULA does not list them as
    // redistributable.
    ("vector_types.h", ""),
    ("vector_functions.h", ""),
];

/// NVRTC's options for every runtime kernel: the architecture the build
/// targets, and no include path.
pub fn options() -> Vec<String> {
    std::vec![std::format!(
        "--gpu-architecture={}",
        env!("CUDA_COMPUTE_CAP")
    )]
}

/// Why NVRTC did not compile a kernel: its status and its log.
pub struct NvrtcFailure {
    pub module: String,
    pub status: String,
    pub log: String,
}

// Debug is what `unwrap` prints: the log as NVRTC wrote it, not escaped.
impl std::fmt::Debug for NvrtcFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NVRTC could not compile the `{}` kernel ({}): {}",
            self.module,
            self.status,
            self.log.trim_end()
        )
    }
}

impl std::fmt::Display for NvrtcFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for NvrtcFailure {}

/// Compiles the runtime kernel `module` from `src` with [`HEADERS`].
pub fn compile(module: &str, src: &str) -> Result<Ptx, NvrtcFailure> {
    compile_with(module, src, HEADERS)
}

/// Compiles `src` with the given headers: [`compile`], or a test's subset.
pub fn compile_with(
    module: &str,
    src: &str,
    headers: &[(&str, &str)],
) -> Result<Ptx, NvrtcFailure> {
    let fail = |status: String, log: String| NvrtcFailure {
        module: module.into(),
        status,
        log,
    };
    let c =
        |s: &str| CString::new(s).map_err(|_| fail("a NUL byte in the source".into(), s.into()));
    let src_c = c(src)?;
    let name_c = c(&std::format!("{module}.cu"))?;
    let names: Vec<CString> = headers.iter().map(|h| c(h.0)).collect::<Result<_, _>>()?;
    let texts: Vec<CString> = headers.iter().map(|h| c(h.1)).collect::<Result<_, _>>()?;
    let name_ptrs: Vec<*const c_char> = names.iter().map(|s| s.as_ptr()).collect();
    let text_ptrs: Vec<*const c_char> = texts.iter().map(|s| s.as_ptr()).collect();
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer is to a live CString; NVRTC copies what it keeps.
    unsafe {
        sys::nvrtcCreateProgram(
            &mut prog,
            src_c.as_ptr(),
            name_c.as_ptr(),
            headers.len() as c_int,
            text_ptrs.as_ptr(),
            name_ptrs.as_ptr(),
        )
    }
    .result()
    .map_err(|e| fail(std::format!("{e:?}"), String::new()))?;
    struct Destroy(sys::nvrtcProgram);
    impl Drop for Destroy {
        fn drop(&mut self) {
            // SAFETY: created above and destroyed once, here.
            let _ = unsafe { result::destroy_program(self.0) };
        }
    }
    let prog = Destroy(prog);
    let text = |v: Vec<c_char>| {
        let bytes: Vec<u8> = v
            .into_iter()
            .map(|b| b as u8)
            .take_while(|&b| b != 0)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    // SAFETY: `prog` is a live program.
    if let Err(e) = unsafe { result::compile_program(prog.0, &options()) } {
        let log = unsafe { result::get_program_log(prog.0) }
            .map_or_else(|e| std::format!("(NVRTC gave no log: {e:?})"), text);
        return Err(fail(std::format!("{e:?}"), log));
    }
    let ptx = unsafe { result::get_ptx(prog.0) }
        .map_err(|e| fail(std::format!("{e:?}"), "cannot read the PTX".into()))?;
    Ok(Ptx::from_src(text(ptx)))
}

/// One kernel module dfdx compiles at run time.
pub struct RuntimeKernel {
    /// The module's name, as dfdx loads it.
    pub module: String,
    pub source: String,
}

/// Every runtime kernel module dfdx 0.13 can compile, for every dtype its
/// CUDA kernels take: the type conversions between all 13 CUDA types, and
/// the concat, stack and reshape kernels for the 12 numeric ones, except
/// where upstream's source cannot compile for a type (nor does archgram
/// ask for it): the reshape backward pass and concat use `atomicAdd`,
/// which CUDA has for float, double, int and unsigned int only, and the
/// concat and stack backward passes lack the `intptr_t` typedef the other
/// kernels have.
pub fn runtime_kernels() -> Vec<RuntimeKernel> {
    let numeric = [
        f32::NAME,
        f64::NAME,
        i8::NAME,
        i16::NAME,
        i32::NAME,
        i64::NAME,
        isize::NAME,
        u8::NAME,
        u16::NAME,
        u32::NAME,
        u64::NAME,
        usize::NAME,
    ];
    let atomic = [f32::NAME, f64::NAME, i32::NAME, u32::NAME];
    let with_bool: Vec<&str> = numeric.iter().copied().chain([bool::NAME]).collect();
    use crate::tensor_ops::cuda_runtime_sources as s;
    let mut out = Vec::new();
    let mut add = |module: String, source: String| out.push(RuntimeKernel { module, source });
    for t in numeric {
        if t != isize::NAME {
            add(std::format!("concat_bwd_{t}"), s::concat_bwd(t));
            add(std::format!("stack_bwd_{t}"), s::stack_bwd(t));
        }
        add(std::format!("reshape_fwd_{t}"), s::reshape_fwd(t));
    }
    for t in atomic {
        add(std::format!("reshape_bwd_{t}"), s::reshape_bwd(t));
        add(std::format!("concat_{t}"), s::concat_along(t));
    }
    for a in &with_bool {
        for b in &with_bool {
            add(std::format!("convert_{a}_to_{b}"), s::to_dtype(a, b));
        }
    }
    out
}
