import argparse
import json
import math
import struct
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Weight matrices are stored `in × out` and applied as `x @ W`, as archgram
# does, so an archgram safetensors file loads without transposes.


def _lecun(rows, cols):
    # Normal(0, 1/sqrt(fan_in)), archgram's initialisation of matrices.
    return nn.Parameter(torch.randn(rows, cols) / math.sqrt(max(rows, 1)))


def _tril(n, device):
    return torch.tril(torch.ones(n, n, device=device))


def _causal_neg(n, device):
    # Additive mask: 0 on and below the diagonal, -1e9 above (as archgram).
    return torch.triu(torch.full((n, n), -1e9, device=device), diagonal=1)


def _desc_order(x, dim):
    # Decreasing order; ties keep the lower index (archgram's rule).
    return torch.sort(x, dim=dim, descending=True, stable=True).indices


def activation(x, name):
    if name == "relu":
        return F.relu(x)
    if name == "gelu":
        return F.gelu(x, approximate="tanh")
    if name == "silu":
        return x * torch.sigmoid(x)
    if name == "leaky_relu":
        return F.leaky_relu(x, 0.01)
    raise ValueError(name)


class Linear(nn.Module):
    """y = x @ W (+ b) over the last axis. With `causal` (token mixing) output
    position i reads inputs j <= i only."""

    def __init__(self, inp, out, bias, causal):
        super().__init__()
        self.w = _lecun(inp, out)
        self.b = nn.Parameter(torch.zeros(out)) if bias else None
        self.causal = causal

    def forward(self, x):
        w = self.w
        if self.causal:
            w = w * torch.triu(torch.ones_like(w))
        y = x @ w
        return y if self.b is None else y + self.b


class Norm(nn.Module):
    """Layer norm or RMS norm over the last axis, eps 1e-5."""

    def __init__(self, kind, width):
        super().__init__()
        self.kind = kind
        self.g = nn.Parameter(torch.ones(width))
        self.b = nn.Parameter(torch.zeros(width)) if kind == "layer" else None

    def forward(self, x):
        if self.kind == "layer":
            return F.layer_norm(x, x.shape[-1:], self.g, self.b, 1e-5)
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-5) * self.g


class PosEnc(nn.Module):
    """A learnable table of the input's shape, added."""

    def __init__(self, rows, cols):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(rows, cols) * 0.02)

    def forward(self, x):
        return x + self.pos


class Vectors(nn.Module):
    """The learned vectors of an op written over primitives (LayerScale,
    affine): each over the last axis, filled with its initial value. The
    generated forward uses them by name."""

    def __init__(self, **vectors):
        super().__init__()
        for name, (width, init) in vectors.items():
            setattr(self, name, nn.Parameter(torch.full((width,), float(init))))


def softmax(x, causal):
    if causal:
        x = x + _causal_neg(x.shape[-1], x.device)
    return torch.softmax(x, dim=-1)


def dot(a, b, scaled, mask):
    """a @ b, scaled by 1/sqrt(k); `left` masks a's entries above the
    diagonal first, `output` zeroes the result's."""
    k = a.shape[-1]
    if mask == "left":
        a = a * _tril(k, a.device)
    y = a @ b
    if scaled:
        y = y * (1.0 / math.sqrt(k))
    if mask == "output":
        y = y * _tril(y.shape[-1], y.device)
    return y


def split(x, part, parts, rows):
    dim = 1 if rows else 2
    n = x.shape[dim] // parts
    return x.narrow(dim, part * n, n)


class Head(nn.Module):
    def __init__(self, width, head_dim):
        super().__init__()
        self.q = _lecun(width, head_dim)
        self.k = _lecun(width, head_dim)
        self.v = _lecun(width, head_dim)


class Attention(nn.Module):
    """Multi-head self-attention without biases. `gates` (mixture of heads)
    scales head h's output per token."""

    def __init__(self, width, heads, head_dim, causal):
        super().__init__()
        for h in range(heads):
            self.add_module(f"h{h}", Head(width, head_dim))
        self.o = _lecun(heads * head_dim, width)
        self.heads, self.head_dim, self.causal = heads, head_dim, causal

    def forward(self, x, gates=None):
        b, s, _ = x.shape
        hs = [getattr(self, f"h{h}") for h in range(self.heads)]

        def project(name):
            w = torch.cat([getattr(h, name) for h in hs], dim=1)
            return (x @ w).view(b, s, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = project("q"), project("k"), project("v")
        scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(self.head_dim))
        if self.causal:
            scores = scores + _causal_neg(s, x.device)
        out = torch.softmax(scores, dim=-1) @ v  # (b, heads, s, head_dim)
        if gates is not None:
            out = out * gates.transpose(1, 2).unsqueeze(-1)
        return out.transpose(1, 2).reshape(b, s, -1) @ self.o


class Mlp(nn.Module):
    """act(x W1) W2, or gated (GLU): (act(x W1) * x W3) W2."""

    def __init__(self, width, hidden, act, gated):
        super().__init__()
        self.w1 = _lecun(width, hidden)
        self.w3 = _lecun(width, hidden) if gated else None
        self.w2 = _lecun(hidden, width)
        self.act = act

    def forward(self, x):
        h = activation(x @ self.w1, self.act)
        if self.w3 is not None:
            h = h * (x @ self.w3)
        return h @ self.w2


def balance_loss(probs, select, alpha, micro_batch):
    """Switch load-balancing loss alpha*E*sum_i f_i*P_i (Fedus et al. 2022,
    eq. 4), f over kept assignments, per group of `micro_batch` sequences
    (0 = the whole batch) and averaged over groups (Qiu et al. 2025)."""
    b, _, e = probs.shape
    group = b if micro_batch <= 0 else min(max(micro_batch, 1), b)
    losses = []
    for g0 in range(0, b, group):
        f = select[g0 : g0 + group].sum(dim=(0, 1))
        f = f / f.sum().clamp(min=1.0)
        p = probs[g0 : g0 + group].mean(dim=(0, 1))
        losses.append(alpha * e * (f * p).sum())
    return torch.stack(losses).mean()


def route(probs, router, top_k, capacity, top_p, drop, bias=None):
    """archgram's routing rules, on probabilities (batch, seq, experts);
    returns the 0/1 selection.

    token_choice: each token's top-k experts; top_p: experts by decreasing
    probability until their mass reaches p, at most k. Both keep at most
    C = ceil(capacity*k*seq/E) tokens per expert and sequence, filled in
    position order (drop="position") or by decreasing gate (drop="score").
    expert_choice: each expert takes its ceil(capacity*seq/E) most probable
    tokens. `bias` (DeepSeek-V3) shifts the choice, not the gates."""
    b, s, e = probs.shape
    k = max(1, min(top_k, e))
    if router == "expert_choice":
        cap = min(math.ceil(capacity * s / e), s)
        chosen = _desc_order(probs, 1)[:, :cap, :]
        return torch.zeros_like(probs).scatter_(1, chosen, 1.0)
    key = probs if bias is None else probs + bias
    order = _desc_order(key, -1)
    wanted = torch.arange(e, device=probs.device).expand(b, s, e) < k
    if router == "top_p":
        ranked = torch.gather(probs, -1, order).double()
        before = F.pad(torch.cumsum(ranked, -1)[..., :-1], (1, 0))
        wanted = wanted & (before < top_p)
    want = torch.zeros(b, s, e, dtype=torch.bool, device=probs.device)
    want.scatter_(-1, order, wanted)
    cap = capacity * k * s / e
    cap = math.ceil(cap) if math.isfinite(cap) else s
    if drop == "score":
        masked = torch.where(want, probs, torch.full_like(probs, -math.inf))
        by_gate = _desc_order(masked, 1)
        slot = torch.empty_like(by_gate)
        ranks = torch.arange(s, device=probs.device).view(1, s, 1).expand(b, s, e)
        slot.scatter_(1, by_gate, ranks)
    else:
        w = want.long()
        slot = torch.cumsum(w, dim=1) - w
    return (want & (slot < cap)).to(probs.dtype)


class MixtureOfExperts(nn.Module):
    """Routed experts e0..e{E-1} and always-on shared experts s0..; each
    expert runs only on the tokens routed to it (as one sequence). After a
    forward pass `aux_loss` holds the router losses and `load` the tokens
    per expert; call `update_bias()` after an optimiser step to apply
    DeepSeek-V3's auxiliary-loss-free balancing when balance="bias"."""

    def __init__(self, width, experts, shared, router, top_k, capacity, top_p, balance, routing):
        super().__init__()
        self.router = _lecun(width, len(experts))
        for i, m in enumerate(experts):
            self.add_module(f"e{i}", m)
        for i, m in enumerate(shared):
            self.add_module(f"s{i}", m)
        self.n_experts, self.n_shared = len(experts), len(shared)
        self.kind, self.top_k, self.capacity, self.top_p = router, top_k, capacity, top_p
        self.balance, self.routing = balance, routing
        self.register_buffer("sel_bias", torch.zeros(len(experts)))
        self.aux_loss = None
        self.load = None

    def forward(self, x):
        b, s, d = x.shape
        e = self.n_experts
        logits = x @ self.router
        probs = torch.softmax(logits, dim=-1)
        bias = self.sel_bias if self.balance == "bias" else None
        select = route(probs.detach(), self.kind, self.top_k, self.capacity, self.top_p,
                       self.routing["drop"], bias)
        gates = probs * select
        if self.kind == "top_p" or (self.kind == "token_choice" and self.top_k > 1):
            gates = gates / (gates.sum(-1, keepdim=True) + 1e-9)
        aux = logits.new_zeros(())
        if self.routing["z_loss"] > 0:
            # Router z-loss (Zoph et al. 2022, ST-MoE eq. 5).
            aux = aux + self.routing["z_loss"] * torch.logsumexp(logits, -1).square().mean()
        if self.balance == "aux_loss" and self.routing["aux_alpha"] > 0:
            aux = aux + balance_loss(probs, select, self.routing["aux_alpha"],
                                     self.routing["micro_batch"])
        self.aux_loss = aux
        self.load = select.sum(dim=(0, 1)).detach()
        flat = x.reshape(b * s, d)
        flat_sel = select.reshape(b * s, e)
        flat_gates = gates.reshape(b * s, e)
        out = torch.zeros_like(flat)
        for i in range(e):
            idx = flat_sel[:, i].nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            y = getattr(self, f"e{i}")(flat[idx].unsqueeze(0)).squeeze(0)
            out = out.index_add(0, idx, y * flat_gates[idx, i : i + 1])
        out = out.view(b, s, d)
        for i in range(self.n_shared):
            out = out + getattr(self, f"s{i}")(x)
        return out

    @torch.no_grad()
    def update_bias(self):
        # b_i += gamma*sign(mean load - load_i) (Wang et al. 2024).
        if self.balance != "bias" or self.load is None:
            return
        self.sel_bias += self.routing["bias_rate"] * torch.sign(self.load.mean() - self.load)


def _on_routed(body, x, sel):
    """body run on each sequence's routed tokens (sel, bool (b, s)) alone,
    gathered in order; sequences routing equally many tokens run together.
    Outputs back at the routed positions, 0 elsewhere."""
    b, s, d = x.shape
    out = torch.zeros_like(x)
    counts = sel.sum(1)
    for m in sorted(set(counts.tolist())):
        if m == 0:
            continue
        rows = torch.nonzero(counts == m).squeeze(1)
        pos = torch.nonzero(sel[rows])  # (group row, position), in order
        r, t = rows[pos[:, 0]], pos[:, 1]
        y = body(x[r, t].reshape(len(rows), m, d))
        out = out.index_put((r, t), y.reshape(-1, d))
    return out


class MixtureOfDepths(nn.Module):
    """Mixture-of-depths (Raposo et al. 2024): the ceil(capacity*T) tokens
    with the highest router score run the body as a shorter sequence (its
    attention sees only them) and get x + sigmoid(r)*body; the others pass
    unchanged. With causal=True, training adds a binary cross-entropy loss
    that teaches the router to predict top-k membership from x alone, and in
    eval mode a token is routed when its score is positive (no later token
    is looked at)."""

    PREDICT_WEIGHT = 0.1

    def __init__(self, width, capacity, body, causal=False):
        super().__init__()
        self.router = _lecun(width, 1)
        self.body = body
        self.capacity = capacity
        self.causal = causal
        self.aux_loss = None

    def forward(self, x):
        s = x.shape[1]
        score = (x @ self.router).squeeze(-1)
        keep = min(max(math.ceil(self.capacity * s), 1), s)
        chosen = _desc_order(score.detach(), 1)[:, :keep]
        sel = torch.zeros_like(score).scatter_(1, chosen, 1.0)
        self.aux_loss = score.new_zeros(())
        if self.causal and self.training:
            self.aux_loss = self.PREDICT_WEIGHT * F.binary_cross_entropy_with_logits(score, sel)
        elif self.causal:
            sel = (score > 0).to(score.dtype)
        gate = torch.sigmoid(score) * sel
        return x + _on_routed(self.body, x, sel.bool()) * gate.unsqueeze(-1)


class LayerSkip(nn.Module):
    """Routed layer skip: g = sigmoid(x w + b); the tokens with g >= 0.5
    run the body as a shorter sequence and get x + g*body, the others pass
    unchanged. `aux_loss` pulls the mean gate to `capacity`."""

    RATE_WEIGHT = 0.01

    def __init__(self, width, capacity, body):
        super().__init__()
        self.router = _lecun(width, 1)
        c = min(max(capacity, 1e-3), 1 - 1e-3)
        self.router_b = nn.Parameter(torch.full((1,), math.log(c / (1 - c))))
        self.body = body
        self.capacity = capacity
        self.aux_loss = None

    def forward(self, x):
        g = torch.sigmoid((x @ self.router).squeeze(-1) + self.router_b)
        sel = (g.detach() >= 0.5).to(g.dtype)
        self.aux_loss = self.RATE_WEIGHT * (g.mean() - self.capacity) ** 2
        return x + _on_routed(self.body, x, sel.bool()) * (g * sel).unsqueeze(-1)


class MixtureOfHeads(Attention):
    """Mixture-of-heads attention (Jin et al. 2024): `shared` heads always on;
    each token takes its top `active` of the other heads by router softmax,
    their outputs weighted by the renormalised probabilities."""

    def __init__(self, width, heads, active, shared, head_dim, causal, routing):
        super().__init__(width, heads, head_dim, causal)
        self.router = _lecun(width, max(heads - shared, 1))
        self.active, self.shared, self.routing = active, shared, routing
        self.aux_loss = None

    def forward(self, x):
        b, s, _ = x.shape
        routed = self.heads - self.shared
        self.aux_loss = x.new_zeros(())
        if routed == 0:
            return super().forward(x)
        probs = torch.softmax(x @ self.router, dim=-1)
        if self.active == 0:
            select = torch.zeros_like(probs)
        else:
            select = route(probs.detach(), "token_choice", self.active, math.inf, 1.0, "position")
            if self.routing["aux_alpha"] > 0:
                self.aux_loss = balance_loss(probs, select, self.routing["aux_alpha"],
                                             self.routing["micro_batch"])
        gates = probs * select
        gates = gates / (gates.sum(-1, keepdim=True) + 1e-9)
        ones = torch.ones(b, s, self.shared, dtype=x.dtype, device=x.device)
        return super().forward(x, torch.cat([ones, gates], dim=-1))


_DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32}


def load_safetensors(path):
    """Reads a safetensors file (8-byte header length, JSON header, raw
    little-endian data) without the safetensors package."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = bytearray(data[8 + n + start : 8 + n + end])
        dtype = _DTYPES[info["dtype"]]
        tensors[name] = torch.frombuffer(raw, dtype=dtype).reshape(info["shape"]).clone()
    return tensors


class Network(nn.Module):
    """Token ids (batch, seq) -> logits (batch, seq, vocab): embedding, the
    searched graph, a linear head with bias. After a forward pass `aux_loss`
    holds the routers' auxiliary losses (add it to the task loss)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Parameter(torch.randn(VOCAB, WIDTH))
        self.graph = Graph()
        self.head = nn.Module()
        self.head.w = _lecun(OUT_WIDTH, VOCAB)
        self.head.b = nn.Parameter(torch.zeros(VOCAB))
        self.aux_loss = None

    def forward(self, tokens):
        x = self.embed[tokens.clamp(0, VOCAB - 1)]
        y = self.graph(x)
        self.aux_loss = sum(
            (m.aux_loss for m in self.modules() if getattr(m, "aux_loss", None) is not None
             and m is not self),
            torch.zeros((), device=y.device),
        )
        return y @ self.head.w + self.head.b

    def update_router_bias(self):
        for m in self.modules():
            if isinstance(m, MixtureOfExperts):
                m.update_bias()


def main():
    here = Path(__file__).resolve()
    default_weights = here.with_suffix(".safetensors")
    ap = argparse.ArgumentParser(description=f"archgram candidate: {ARCH}")
    ap.add_argument("--weights", type=Path, default=default_weights if default_weights.exists() else None,
                    help="safetensors file written by `archgram export --weights`")
    default_probe = here.with_suffix(".probe.safetensors")
    ap.add_argument("--check", type=Path, metavar="PROBE", nargs="?", const=default_probe,
                    help="compare with archgram's logits stored in PROBE (tokens, logits); "
                         f"default {default_probe.name}")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest allowed |difference| (with --check)")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = Network()
    if args.weights is not None:
        model.load_state_dict(load_safetensors(args.weights))
        print(f"weights: {args.weights}")
    model.eval()
    if args.check is not None:
        probe = load_safetensors(args.check)
        tokens, expected = probe["tokens"].long(), probe["logits"]
    else:
        tokens = torch.randint(0, VOCAB, (2, SEQ))
    with torch.no_grad():
        logits = model(tokens)
    n = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n}; input {tuple(tokens.shape)} -> logits {tuple(logits.shape)}")
    if args.check is not None:
        diff = (logits - expected).abs().max().item()
        ok = diff <= args.tol
        print(f"max |logits - archgram| = {diff:.3e} ({'within' if ok else 'OVER'} {args.tol:g})")
        sys.exit(0 if ok else 1)
