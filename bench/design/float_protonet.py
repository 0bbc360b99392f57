import numpy as np, torch, time, sys
import torch.nn.functional as F
from regulator.tasks.nanosensor import NanosensorFamily
torch.set_num_threads(1)
ITERS = int(sys.argv[1]); MODE = sys.argv[2]  # proto | joint
fam = NanosensorFamily()
def prep(sx, qx):
    s = sx.reshape(len(sx), -1); q = qx.reshape(len(qx), -1)
    mu = s.mean(0); sd = s.std(0) + 0.05
    return torch.from_numpy(((s - mu) / sd).astype(np.float32)), torch.from_numpy(((q - mu) / sd).astype(np.float32))
emb = torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU())
head = torch.nn.Linear(64, 5)
log_temp = torch.nn.Parameter(torch.tensor(1.0))
opt = torch.optim.Adam(list(emb.parameters()) + list(head.parameters()) + [log_temp], lr=1e-3)
rng = np.random.default_rng(0)
def logits(eq, P): return -((eq[:, None, :] - P[None]) ** 2).sum(-1) / log_temp.exp()
def protos(es, sy): return torch.stack([es[torch.as_tensor(sy) == c].mean(0) for c in range(5)])
t0 = time.time()
for it in range(ITERS):
    opt.zero_grad(); loss = 0
    for _ in range(8):
        env = fam.environment_from_seed(int(rng.integers(0, 2**31 - 1)))
        K = int(rng.choice([1, 5, 10])) if MODE == "proto" else 10
        ep = fam.episode(env, K, 30, rng)
        si, qi = prep(ep.support_x, ep.query_x)
        if MODE == "proto":
            l = F.cross_entropy(logits(emb(qi), protos(emb(si), ep.support_y)), torch.as_tensor(ep.query_y))
        else:
            l = F.cross_entropy(head(emb(torch.cat([si, qi]))), torch.as_tensor(np.concatenate([ep.support_y, ep.query_y])))
        loss = loss + l / 8
    loss.backward(); opt.step()
    if it % 500 == 0: print(it, float(loss), round(time.time() - t0, 1), flush=True)
def finetune(es, sy, W, b, steps=50, lr=0.5, wd=0.0):
    W = W.clone().requires_grad_(); b = b.clone().requires_grad_()
    y = torch.as_tensor(sy)
    for _ in range(steps):
        l = F.cross_entropy(es @ W.t() + b, y) + wd * ((W - W.detach())**2).sum()
        gW, gb = torch.autograd.grad(l, [W, b])
        W = (W - lr * gW).detach().requires_grad_(); b = (b - lr * gb).detach().requires_grad_()
    return W.detach(), b.detach()
with torch.no_grad():
  for K in (1, 5, 10):
    r = np.random.default_rng([K, 5]); res = {}
    for i in range(40):
        env = fam.environment_from_seed(2**31 + i); ep = fam.episode(env, K, 60, r)
        si, qi = prep(ep.support_x, ep.query_x); es, eq = emb(si), emb(qi); y = torch.as_tensor(ep.query_y)
        P = protos(es, ep.support_y)
        res.setdefault("ncm", []).append(float((logits(eq, P).argmax(1) == y).float().mean()))
        # linear equivalent of protos, then fine-tune
        t = log_temp.exp(); W0 = 2 * P / t; b0 = -(P ** 2).sum(1) / t
        with torch.enable_grad():
            W, b = finetune(es, ep.support_y, W0, b0, steps=30, lr=0.1)
        res.setdefault("ncm+ft", []).append(float(((eq @ W.t() + b).argmax(1) == y).float().mean()))
        if MODE == "joint":
            res.setdefault("nofit", []).append(float((head(eq).argmax(1) == y).float().mean()))
            with torch.enable_grad():
                W, b = finetune(es, ep.support_y, head.weight.detach(), head.bias.detach(), steps=30, lr=0.3)
            res.setdefault("head+ft", []).append(float(((eq @ W.t() + b).argmax(1) == y).float().mean()))
    print(K, {k: round(100*np.mean(v),1) for k, v in res.items()}, flush=True)
