#!/usr/bin/env bash
# The GPU measurements of the README's GPU section, in one run, for a
# machine with an NVIDIA GPU and a copied CUDA build of archgram:
#
#     scripts/gpu-check.sh path/to/archgram [OUT_DIR]
#
# Run from the repository's root (it reads spaces/, grammars/ and
# benches/pytorch_reference.py). It finds the CUDA libraries of the
# binary's CUDA version (12 or 13) in python3's site-packages (a PyTorch
# install has them) or /usr/local/cuda, then reports:
#
# 1. `archgram cuda-kernels`: every runtime kernel compiles with NVRTC;
# 2. each shipped space's `eval --sample 1 --steps 100` on the CPU and on
#    the GPU: status, score, final loss, test loss, seconds;
# 3. training steps/s of the speed issue's three transformers on the GPU
#    (the difference between 550 and 50 steps, so start-up and the final
#    evaluation drop out), and PyTorch eager's on the same GPU if python3
#    has torch;
# 4. trainings per minute of quickstart searches (`--time`, default 25 s
#    each): 1 and 8 processes, 1 process with 4 and 8 workers, and, when
#    NVIDIA's MPS daemon starts, 1, 4, 8 and 16 processes under it, each
#    with the GPU's mean utilisation.
#
# About 5 minutes on an H200. Everything is printed and kept in
# OUT_DIR/log.txt (default: gpu-check-out).
set -u
bin=$(realpath "${1:?usage: scripts/gpu-check.sh path/to/archgram [OUT_DIR]}")
out=$(realpath -m "${2:-gpu-check-out}")
window=${GPU_CHECK_WINDOW:-25}
mkdir -p "$out"
exec > >(tee -a "$out/log.txt") 2>&1
start=$(date +%s)
say() { echo "[+$(($(date +%s) - start))s] $*"; }
export PATH=$PATH:/usr/local/nvidia/bin
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
echo "cores: $(nproc)"

# The libraries the binary links, wherever this machine keeps them.
sonames=$(ldd "$bin" | grep -oE 'lib(cublas|cublasLt|nvrtc)\.so\.[0-9]+' | sort -u | tr '\n' ' ')
dirs=$(python3 - $sonames <<'EOF'
import glob, os, site, sys
roots = site.getsitepackages() + ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]
found = {os.path.dirname(f) for r in roots for n in sys.argv[1:]
         for f in glob.glob(os.path.join(r, "**", n), recursive=True)}
print(":".join(sorted(found)))
EOF
)
export LD_LIBRARY_PATH=$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
say "libraries: ${sonames:-none found by ldd} from ${dirs:-nowhere}"
ldd "$bin" | grep -E 'libcuda|cublas|nvrtc|not found'

say "1. runtime kernels"
timeout 120 "$bin" cuda-kernels 2>&1 | tail -3
if ! timeout 90 "$bin" eval --space spaces/quickstart.ron --sample 1 --steps 20 --device cuda --json >"$work/smoke.json" 2>"$work/smoke.err"; then
    say "a first training on the GPU failed; stopping here"
    tail -5 "$work/smoke.err"
    exit 1
fi

field() { python3 -c 'import json, sys; o = json.load(open(sys.argv[1]))["outcome"]; print(" ".join(str(o.get(k)) for k in sys.argv[2:]))' "$@"; }
say "2. CPU against GPU: status score final_loss test_loss seconds"
for space in spaces/*.ron; do
    for device in cpu cuda; do
        if timeout 60 "$bin" eval --space "$space" --sample 1 --steps 100 --device $device --json >"$work/a.json" 2>/dev/null; then
            echo "$space $device $(field "$work/a.json" status score final_loss test_loss wall_secs)"
        else
            echo "$space $device failed"
        fi
    done
done

say "3. steps/s on the GPU (2-layer pre-LN transformers, heads of 16)"
# The quickstart's grammar allows at most 4 heads; the large model has 8.
sed 's/"heads": \[1, 2, 4\]/"heads": [1, 2, 4, 8]/g' grammars/blocks.ron >"$work/blocks.ron"
for size in "tiny 16 12 32" "medium 32 32 64" "large 32 64 128"; do
    read -r name batch seq width <<<"$size"
    cat >"$work/$name.ron" <<EOF
Space(
    name: "gpu-$name",
    grammar: "blocks.ron",
    task: (name: "in_context_recall", params: {"vocab": 16, "seq_len": $seq, "train_examples": 2000}),
    width: $width,
    limits: (max_depth: 8, max_nodes: 80, max_params: 10000000, max_flops: 100000000),
    train: (steps: 250, batch_size: $batch, lr: 0.003, warmup_steps: 25),
)
EOF
    layer="seq(block(norm=pre, norm_kind=layer, attention(head_dim=auto, heads=$((width / 16)))), block(norm=pre, norm_kind=layer, mlp(act=gelu, gated=false, ratio=4)))"
    for steps in 50 550; do
        timeout 100 "$bin" eval --space "$work/$name.ron" --arch "repeat(n=2, $layer, $layer)" \
            --steps $steps --device cuda --json >"$work/$steps.json" 2>"$work/err" || tail -2 "$work/err"
    done
    python3 - "$work" "$name" <<'EOF'
import json, sys
w, name = sys.argv[1:]
a, b = (json.load(open(f"{w}/{s}.json"))["outcome"] for s in (50, 550))
dt = b["wall_secs"] - a["wall_secs"]
print(f"archgram {name}: {500 / dt:.1f} steps/s, {(b['tokens'] - a['tokens']) / dt:.0f} tokens/s")
EOF
done
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    timeout 120 python3 benches/pytorch_reference.py --sizes 1 --device cuda
else
    echo "no PyTorch with CUDA here: no reference"
fi

say "4. trainings per minute, ${window} s windows"
trainings() { # label processes workers
    rm -rf "$work/runs"
    nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 1000 >"$work/util" 2>/dev/null &
    local monitor=$! pids=()
    for i in $(seq "$2"); do
        "$bin" search --space spaces/quickstart.ron --strategy random --seed "$i" --time "${window}s" --no-confirm \
            --no-tui --runs "$work/runs" --name "r$i" --workers "$3" --device cuda >/dev/null 2>"$work/search$i.err" &
        pids+=($!)
    done
    wait "${pids[@]}"
    kill $monitor 2>/dev/null
    python3 - "$work" "$@" <<'EOF'
import glob, json, sys
w, label, procs, workers = sys.argv[1:]
n, spans = 0, []
for f in glob.glob(f"{w}/runs/*/events.jsonl"):
    events = [json.loads(l) for l in open(f)]
    done = [e["t"] for e in events if e["event"] == "evaluated"]
    n += len(done)
    if done:
        spans.append(max(done) - events[0]["t"])
util = [float(l) for l in open(f"{w}/util") if l.strip()]
busy = f"{sum(util) / len(util):.0f}%" if util else "unknown"
rate = f"{60 * n / max(spans):.0f}/min" if spans else "none"
print(f"{label}: {procs} process(es) x {workers} worker(s): {n} trainings, {rate}, GPU busy {busy}")
EOF
    grep -h -i error "$work"/search*.err | head -2
}
trainings plain 1 1
trainings plain 8 1
trainings workers 1 4
trainings workers 1 8
export CUDA_MPS_PIPE_DIRECTORY=$work/mps CUDA_MPS_LOG_DIRECTORY=$work/mps-log
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
if nvidia-cuda-mps-control -d; then
    sleep 1
    for n in 1 4 8 16; do trainings mps $n 1; done
    echo quit | nvidia-cuda-mps-control
else
    echo "the MPS daemon did not start: no MPS figures"
fi
say "done"
