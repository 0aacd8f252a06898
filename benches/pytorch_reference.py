# PyTorch side of the train_step bench's reference model (issue 3): a 2-layer
# pre-LN transformer, batch 32, seq 32, width 64, MLP 256, vocab 16, Adam, one
# thread. Run: python3 benches/pytorch_reference.py
import time, torch, torch.nn as nn
torch.set_num_threads(1)
torch.manual_seed(0)
V, S, B, D, H = 16, 32, 32, 64, 4
class Block(nn.Module):
    def __init__(s):
        super().__init__()
        s.n1, s.n2 = nn.LayerNorm(D), nn.LayerNorm(D)
        s.qkv = nn.Linear(D, 3 * D, bias=False); s.o = nn.Linear(D, D, bias=False)
        s.f1, s.f2 = nn.Linear(D, 4 * D, bias=False), nn.Linear(4 * D, D, bias=False)
    def forward(s, x):
        h = s.n1(x); q, k, v = s.qkv(h).view(B, S, 3, H, D // H).unbind(2)
        a = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + s.o(a.transpose(1, 2).reshape(B, S, D))
        return x + s.f2(torch.nn.functional.gelu(s.f1(s.n2(x)), approximate="tanh"))
m = nn.Sequential(nn.Embedding(V, D), Block(), Block(), nn.Linear(D, V))
opt = torch.optim.Adam(m.parameters(), 1e-3)
x = torch.randint(0, V, (B, S)); y = torch.randint(0, V, (B, S))
def step():
    opt.zero_grad(); loss = nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten()); loss.backward(); opt.step()
for _ in range(50): step()
n = 400; t = time.perf_counter()
for _ in range(n): step()
dt = time.perf_counter() - t
print(f"pytorch {torch.__version__}: {n/dt:.1f} steps/s ({1000*dt/n:.2f} ms/step)")
