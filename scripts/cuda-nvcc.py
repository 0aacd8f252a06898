#!/usr/bin/env python3
"""A stand-in for `nvcc --ptx` built on NVRTC, for dfdx's build script.

NVIDIA's CUDA 12 wheels on PyPI ship NVRTC but no nvcc (the nvcc wheels
that have one are CUDA 13's, whose PTX drivers before 580 refuse), so
scripts/cuda.sh installs this as `nvcc`. NVRTC is the compiler nvcc's
device side uses, as a library; for dfdx's kernels, which are device code
only, it makes the same PTX. It does what dfdx 0.13's build.rs asks of
nvcc and nothing else:

    nvcc --list-gpu-code
    nvcc --gpu-architecture=sm_XX --ptx [--default-stream per-thread]
         --output-directory DIR [-IDIR ...] FILE.cu

Anything else is refused, so that a flag it would ignore cannot pass
unnoticed. libnvrtc comes from ../lib (where scripts/cuda.sh puts it).
"""

import ctypes
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The two C/C++ library headers dfdx's kernels include. nvcc finds them in
# the host compiler's library, and includes <math.h> in every file (through
# cuda_runtime.h: pool2d.cu uses INFINITY without including it). NVRTC has
# no library headers but defines the math functions itself, so <math.h>
# needs only the constants, with glibc's values. <cstdint>: the
# fixed-width types as x86-64 Linux (LP64, glibc) defines them.
LIBRARY_HEADERS = {
    "math.h": """#pragma once
#define INFINITY __int_as_float(0x7f800000)
#define NAN __int_as_float(0x7fffffff)
#define M_E 2.7182818284590452354
#define M_LOG2E 1.4426950408889634074
#define M_LOG10E 0.43429448190325182765
#define M_LN2 0.69314718055994530942
#define M_LN10 2.30258509299404568402
#define M_PI 3.14159265358979323846
#define M_PI_2 1.57079632679489661923
#define M_PI_4 0.78539816339744830962
#define M_1_PI 0.31830988618379067154
#define M_2_PI 0.63661977236758134308
#define M_2_SQRTPI 1.12837916709551257390
#define M_SQRT2 1.41421356237309504880
#define M_SQRT1_2 0.70710678118654752440
""",
    "cstdint": """#pragma once
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long int64_t;
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long uint64_t;
typedef long intptr_t;
typedef unsigned long uintptr_t;
""",
}


def nvrtc():
    lib = ctypes.CDLL(os.path.join(ROOT, "lib", "libnvrtc.so"))
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    return lib


def check(lib, status, what):
    if status != 0:
        sys.exit(f"nvcc (NVRTC stand-in): {what}: {lib.nvrtcGetErrorString(status).decode()}")


def list_gpu_code(lib):
    n = ctypes.c_int()
    check(lib, lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "supported architectures")
    archs = (ctypes.c_int * n.value)()
    check(lib, lib.nvrtcGetSupportedArchs(archs), "supported architectures")
    for a in archs:
        print(f"sm_{a}")


def compile_ptx(lib, arch, out_dir, includes, path):
    with open(path, "rb") as f:
        src = f.read()
    name = os.path.basename(path)
    prog = ctypes.c_void_p()
    n = len(LIBRARY_HEADERS)
    texts = (ctypes.c_char_p * n)(*[t.encode() for t in LIBRARY_HEADERS.values()])
    names = (ctypes.c_char_p * n)(*[k.encode() for k in LIBRARY_HEADERS])
    check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), src, name.encode(), n, texts, names),
          f"cannot create a program from {path}")
    # nvcc looks beside the file and in its own include folder; NVRTC is
    # told both.
    dirs = [os.path.dirname(os.path.abspath(path))] + includes + [os.path.join(ROOT, "include")]
    opts = [f"--gpu-architecture={arch}".encode(), b"--pre-include=math.h"]
    opts += [f"--include-path={d}".encode() for d in dirs]
    status = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    if log.value.strip():
        sys.stderr.write(log.value.decode(errors="replace"))
    check(lib, status, f"cannot compile {path}")
    check(lib, lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "PTX size")
    ptx = ctypes.create_string_buffer(size.value)
    check(lib, lib.nvrtcGetPTX(prog, ptx), "PTX")
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    stem = os.path.splitext(name)[0]
    with open(os.path.join(out_dir, stem + ".ptx"), "wb") as f:
        f.write(ptx.value)


def main(args):
    lib = nvrtc()
    if args == ["--list-gpu-code"]:
        return list_gpu_code(lib)
    arch, out_dir, includes, files, ptx = None, None, [], [], False
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--gpu-architecture="):
            arch = a.split("=", 1)[1]
        elif a == "--ptx":
            ptx = True
        elif a == "--default-stream" and i + 1 < len(args):
            i += 1  # host-side only: no effect on PTX
        elif a == "--output-directory" and i + 1 < len(args):
            i += 1
            out_dir = args[i]
        elif a.startswith("-I") and len(a) > 2:
            includes.append(a[2:])
        elif a.endswith(".cu") and not a.startswith("-"):
            files.append(a)
        else:
            sys.exit(f"nvcc (NVRTC stand-in): unsupported argument `{a}`")
        i += 1
    if not (ptx and arch and out_dir and len(files) == 1):
        sys.exit("nvcc (NVRTC stand-in): give --gpu-architecture=sm_XX --ptx --output-directory DIR FILE.cu")
    compile_ptx(lib, arch, out_dir, includes, files[0])


if __name__ == "__main__":
    main(sys.argv[1:])
