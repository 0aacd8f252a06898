# PyTorch side of the train_step bench's reference models (issue 3): a 2-layer
# pre-LN transformer, batch 32, seq 32, width 64, MLP 256, vocab 16, Adam, one
# thread; and the same with each MLP a top-2-of-4 mixture of MLP experts
# (softmax router, renormalised gates, Switch balance loss 0.01, experts run
# on their gathered tokens), as archgram's bench builds them.
# Run: python3 benches/pytorch_reference.py
# With --sizes [THREADS]: the transformer at the speed issue's three sizes
# (heads of 16), on THREADS threads (default 1), as the train_step bench's
# `sizes/` group builds them: tiny (batch 16 x 12 tokens, width 32, MLP 128),
# medium (32 x 32, 64, 256) and large (32 x 64, 128, 512).
# With --device cuda (anywhere among the arguments): the same on the GPU,
# timed between synchronisations, as archgram's `--device cuda` trains.
import sys, time, torch, torch.nn as nn
import torch.nn.functional as F
DEVICE = "cpu"
if "--device" in sys.argv:
    DEVICE = sys.argv[sys.argv.index("--device") + 1]
    del sys.argv[sys.argv.index("--device"):sys.argv.index("--device") + 2]
SIZES = "--sizes" in sys.argv
torch.set_num_threads(int(sys.argv[2]) if SIZES and len(sys.argv) > 2 else 1)
torch.manual_seed(0)
V, S, B, D, H, E, K = 16, 32, 32, 64, 4, 4, 2
def mlp():
    return nn.Sequential(nn.Linear(D, 4 * D, bias=False), nn.GELU(approximate="tanh"), nn.Linear(4 * D, D, bias=False))
class Moe(nn.Module):
    def __init__(s):
        super().__init__()
        s.router = nn.Linear(D, E, bias=False); s.experts = nn.ModuleList(mlp() for _ in range(E)); s.aux = 0.0
    def forward(s, x):
        t = x.reshape(-1, D); p = s.router(t).softmax(-1)
        g, idx = p.topk(K, -1); g = g / g.sum(-1, keepdim=True)
        f = F.one_hot(idx, E).sum(1).float().mean(0) / K
        s.aux = 0.01 * E * (f * p.mean(0)).sum()
        out = torch.zeros_like(t)
        for e, ex in enumerate(s.experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            out.index_add_(0, tok, ex(t[tok]) * g[tok, slot, None])
        return out.view_as(x)
class Block(nn.Module):
    def __init__(s, moe):
        super().__init__()
        s.n1, s.n2 = nn.LayerNorm(D), nn.LayerNorm(D)
        s.qkv = nn.Linear(D, 3 * D, bias=False); s.o = nn.Linear(D, D, bias=False)
        s.ff = Moe() if moe else mlp()
    def forward(s, x):
        h = s.n1(x); q, k, v = s.qkv(h).view(B, S, 3, H, D // H).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + s.o(a.transpose(1, 2).reshape(B, S, D))
        return x + s.ff(s.n2(x))
def bench(name, moe):
    m = nn.Sequential(nn.Embedding(V, D), Block(moe), Block(moe), nn.Linear(D, V)).to(DEVICE)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x = torch.randint(0, V, (B, S), device=DEVICE); y = torch.randint(0, V, (B, S), device=DEVICE)
    sync = torch.cuda.synchronize if DEVICE.startswith("cuda") else (lambda: None)
    def step():
        opt.zero_grad()
        loss = F.cross_entropy(m(x).flatten(0, 1), y.flatten())
        if moe: loss = loss + sum(b.ff.aux for b in m[1:3])
        loss.backward(); opt.step()
    for _ in range(50): step()
    sync()
    n = 400; t = time.perf_counter()
    for _ in range(n): step()
    sync()
    dt = time.perf_counter() - t
    where = "" if DEVICE == "cpu" else f" on {DEVICE}"
    print(f"pytorch {torch.__version__} {name}{where}: {n/dt:.1f} steps/s ({1000*dt/n:.2f} ms/step)")
if SIZES:
    for name, b, s, d in [("tiny", 16, 12, 32), ("medium", 32, 32, 64), ("large", 32, 64, 128)]:
        B, S, D, H = b, s, d, d // 16
        bench(f"sizes/{name} ({torch.get_num_threads()} threads)", False)
else:
    bench("transformer-2L-w64", False)
    bench("moe-top2of4-2L-w64", True)
