//! Where candidates train: the CPU or one GPU of the machine, as the
//! `--device` flag names it (`cpu`, `cuda`, `cuda:N`), whether this build
//! and this machine can use it, and what a CUDA failure is reported as.

use serde::{Deserialize, Serialize};

/// Where candidates train. Written as `cpu`, `cuda` (GPU 0) or `cuda:N`
/// in flags and in a run's stored settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum DeviceKind {
    #[default]
    Cpu,
    /// dfdx's CUDA device on the GPU with this ordinal; needs the `cuda`
    /// cargo feature.
    Cuda(usize),
}

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("this archgram was built without CUDA; build it with `cargo build --release --features cuda` (with a CUDA toolkit, or after `eval \"$(scripts/cuda.sh)\"`)")]
    CudaNotBuilt,
    /// The GPU did not open: the driver's own words.
    #[error("cannot open CUDA device {ordinal}: {cause}")]
    CudaOpen { ordinal: usize, cause: String },
}

impl DeviceKind {
    /// The name flags and outcomes use.
    pub fn name(self) -> String {
        match self {
            DeviceKind::Cpu => "cpu".into(),
            DeviceKind::Cuda(0) => "cuda".into(),
            DeviceKind::Cuda(n) => format!("cuda:{n}"),
        }
    }

    /// Reads `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Result<DeviceKind, String> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<u16>().ok())
                .map(|n| DeviceKind::Cuda(n as usize))
                .ok_or_else(|| {
                    format!("`{s}`: use cpu, cuda (GPU 0) or cuda:N (GPU N, from 0 to 65535)")
                }),
        }
    }

    /// Whether this build can use the device.
    pub fn check(self) -> Result<(), EvalError> {
        match self {
            DeviceKind::Cuda(_) if !cfg!(feature = "cuda") => Err(EvalError::CudaNotBuilt),
            _ => Ok(()),
        }
    }

    /// Opens the device once and lets it go: whether this build and this
    /// machine can train on it, asked before a run starts rather than by
    /// its first candidate.
    pub fn open(self) -> Result<(), EvalError> {
        self.check()?;
        match self {
            DeviceKind::Cpu => Ok(()),
            DeviceKind::Cuda(n) => open_cuda(n, 0).map(drop),
        }
    }
}

impl From<DeviceKind> for String {
    fn from(d: DeviceKind) -> String {
        d.name()
    }
}

impl TryFrom<String> for DeviceKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        DeviceKind::parse(&s)
    }
}

/// dfdx's CUDA device on GPU `ordinal`. cudarc 0.9 panics when the driver
/// cannot start or the ordinal is out of range (it unwraps `cuInit` and
/// `cuDeviceGet`), so both are asked here first, where their errors are
/// values.
#[cfg(feature = "cuda")]
pub fn open_cuda(ordinal: usize, seed: u64) -> Result<dfdx::tensor::Cuda, EvalError> {
    use cudarc::driver::result;
    let fail = |cause: String| EvalError::CudaOpen { ordinal, cause };
    let driver = |e: result::DriverError| fail(driver_error(&e));
    result::init().map_err(driver)?;
    let count = result::device::get_count().map_err(driver)?;
    let index = i32::try_from(ordinal).unwrap_or(i32::MAX);
    if index >= count {
        // The driver's own error for it, and what there is.
        let e = result::device::get(index)
            .err()
            .map_or_else(String::new, |e| driver_error(&e));
        let there = match count {
            0 => "this machine has no GPU".to_string(),
            n => format!("this machine has {n}: cuda:0 to cuda:{}", n - 1),
        };
        return Err(fail(format!("{e} ({there})")));
    }
    dfdx::tensor::Cuda::try_build(ordinal, seed).map_err(|e| fail(format!("{e:?}")))
}

#[cfg(not(feature = "cuda"))]
pub fn open_cuda(_: usize, _: u64) -> Result<std::convert::Infallible, EvalError> {
    Err(EvalError::CudaNotBuilt)
}

/// A driver error as `NAME: text`, both from the driver.
#[cfg(feature = "cuda")]
fn driver_error(e: &cudarc::driver::result::DriverError) -> String {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned());
    let text = e.error_string().map(|s| s.to_string_lossy().into_owned());
    match (name, text) {
        (Ok(n), Ok(t)) => format!("{n}: {t}"),
        _ => format!("CUDA error {:?}", e.0),
    }
}

/// What a panic while training on `device` is reported as. dfdx's
/// non-`try_` operations unwrap the errors of its CUDA device (a kernel
/// launch, an allocation, a runtime kernel NVRTC did not compile), so a
/// CUDA failure arrives as a panic whose message is
/// "called `Result::unwrap()` on an `Err` value: " and the error: it is
/// reported as `CUDA error on GPU N:` and the error. Any other panic is a
/// defect, reported as an internal error.
pub fn panic_reason(device: DeviceKind, message: &str) -> String {
    const UNWRAP: &str = "called `Result::unwrap()` on an `Err` value: ";
    let cause = message.strip_prefix(UNWRAP).unwrap_or(message);
    // dfdx's `CudaError` variants and cudarc's own error types, as Debug
    // prints them.
    const CUDA: [&str; 6] = [
        "Driver(",
        "Blas(",
        "Nvrtc(",
        "DriverError(",
        "CublasError(",
        "NVRTC ",
    ];
    match device {
        DeviceKind::Cuda(n) if CUDA.iter().any(|p| cause.starts_with(p)) => {
            format!("CUDA error on GPU {n}: {cause}")
        }
        _ => format!("internal error while training: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_read_and_write_as_flags_name_them() {
        for (text, d) in [
            ("cpu", DeviceKind::Cpu),
            ("cuda", DeviceKind::Cuda(0)),
            ("cuda:3", DeviceKind::Cuda(3)),
        ] {
            assert_eq!(DeviceKind::parse(text), Ok(d));
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<DeviceKind>(&format!("\"{text}\"")).unwrap(),
                d
            );
        }
        // GPU 0 has one name, as runs stored before `cuda:N` wrote it.
        assert_eq!(DeviceKind::parse("cuda:0").unwrap().name(), "cuda");
        for bad in [
            "gpu",
            "cuda:",
            "cuda:-1",
            "cuda:x",
            "cuda:65536",
            "CUDA",
            "",
        ] {
            let e = DeviceKind::parse(bad).unwrap_err();
            assert!(e.contains("cuda:N"), "{bad}: {e}");
        }
    }

    /// A CUDA error dfdx unwrapped is reported with its cause and the GPU,
    /// not as an internal error (as it was before: "internal error while
    /// training: called `Result::unwrap()` on an `Err` value: ...").
    #[test]
    fn a_cuda_error_dfdx_unwrapped_is_reported_with_its_cause() {
        let oom = "called `Result::unwrap()` on an `Err` value: Driver(DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\"))";
        assert_eq!(
            panic_reason(DeviceKind::Cuda(1), oom),
            "CUDA error on GPU 1: Driver(DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\"))"
        );
        let nvrtc = "called `Result::unwrap()` on an `Err` value: Nvrtc(NVRTC could not compile the `reshape_fwd_float` kernel (NVRTC_ERROR_COMPILATION): reshape_fwd_float.cu(8): catastrophic error: cannot open source file \"cuda_utils.cuh\")";
        let r = panic_reason(DeviceKind::Cuda(0), nvrtc);
        assert!(
            r.starts_with(
                "CUDA error on GPU 0: Nvrtc(NVRTC could not compile the `reshape_fwd_float` kernel"
            ),
            "{r}"
        );
        assert!(
            r.contains("cannot open source file \"cuda_utils.cuh\""),
            "{r}"
        );
        // cudarc's own unwraps (of `cuInit`, say) print the bare error.
        let init = "called `Result::unwrap()` on an `Err` value: DriverError(CUDA_ERROR_NO_DEVICE, \"no CUDA-capable device is detected\")";
        assert!(panic_reason(DeviceKind::Cuda(2), init)
            .starts_with("CUDA error on GPU 2: DriverError(CUDA_ERROR_NO_DEVICE"));
        // A defect stays an internal error, on the CPU and on a GPU.
        let bug = "index out of bounds: the len is 3 but the index is 7";
        for d in [DeviceKind::Cpu, DeviceKind::Cuda(0)] {
            assert_eq!(
                panic_reason(d, bug),
                format!("internal error while training: {bug}")
            );
        }
        assert_eq!(
            panic_reason(DeviceKind::Cpu, oom),
            format!("internal error while training: {oom}")
        );
    }
}
