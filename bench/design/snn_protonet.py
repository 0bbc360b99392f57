import numpy as np, torch, time, sys
import torch.nn.functional as F
from regulator.tasks.nanosensor import NanosensorFamily
from regulator.chip.network import NetworkConfig, SpikingNetwork, ChipInstance
from regulator.chip.profiles import load_profile
from regulator.chip.encoders import resample_time
from regulator.meta.readout import li_kernel, readout_features
from regulator.chip.energy import EnergyModel
torch.set_num_threads(1)
T, H, ITERS, MODE, DT = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
NB = int(sys.argv[6]) if len(sys.argv) > 6 else 4
fam = NanosensorFamily(); prof = load_profile("loihi")
n_in = 8 * NB if MODE == "space" else 8
cfg = NetworkConfig(n_inputs=n_in, hidden=(H,), n_outputs=5, n_steps=T, dt_s=DT)
net = SpikingNetwork(cfg, init_seed=0); ker = li_kernel(cfg, T)
gain = torch.nn.Parameter(torch.tensor(1.0)); log_temp = torch.nn.Parameter(torch.tensor(0.0))
def enc(z):
    z = torch.from_numpy(z.astype(np.float32))
    if MODE == "space":
        B, C, L = z.shape
        v = z.reshape(B, C, NB, L // NB).mean(3).reshape(B, C * NB)
        return v[None].expand(T, B, C * NB).contiguous()
    return resample_time(z, T)
def prep(sx, *xs):
    mu = sx.mean(0); sd = sx.std(0) + 0.05
    return [enc((x - mu) / sd) for x in (sx, *xs)]
opt = torch.optim.Adam(list(net.parameters()) + [gain, log_temp], lr=3e-3)
def embed(inp, chip):
    out = net(inp * gain, chip); return readout_features(out.last_spikes, ker), out
def protos(es, sy): return torch.stack([es[torch.as_tensor(sy) == c].mean(0) for c in range(5)])
def logits(eq, P): return -((eq[:, None, :] - P[None]) ** 2).sum(-1) / log_temp.exp()
rng = np.random.default_rng(0); t0 = time.time()
for it in range(ITERS):
    opt.zero_grad(); tot = 0
    for _ in range(8):
        env = fam.environment_from_seed(int(rng.integers(0, 2**31 - 1)))
        K = int(rng.choice([1, 5, 10])); ep = fam.episode(env, K, 30, rng)
        chip = ChipInstance.create(prof, cfg, int(rng.integers(0, 2**31 - 1)))
        si, qi = prep(ep.support_x, ep.query_x)
        e, _ = embed(torch.cat([si, qi], 1), chip); ns = len(ep.support_y)
        l = F.cross_entropy(logits(e[ns:], protos(e[:ns], ep.support_y)), torch.as_tensor(ep.query_y)) / 8
        l.backward(); tot += float(l)
    torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0); opt.step()
    if it % 200 == 0: print(it, round(tot, 3), round(time.time() - t0, 1), flush=True)
em = EnergyModel("loihi")
with torch.no_grad():
  for K in (1, 5, 10):
    r = np.random.default_rng([K, 5]); res = {}; ens = []
    for i in range(40):
        env = fam.environment_from_seed(2**31 + i); ep = fam.episode(env, K, 60, r)
        chip = ChipInstance.create(prof, cfg, 10_000 + i)
        si, qi = prep(ep.support_x, ep.query_x)
        es, _ = embed(si, chip); eq, oq = embed(qi, chip); y = torch.as_tensor(ep.query_y)
        ens.append(em.energy(oq.telemetry).inference_j / 60)
        res.setdefault("ncm", []).append(float((logits(eq, protos(es, ep.support_y)).argmax(1) == y).float().mean()))
    print(f"K={K}", {k: round(100*np.mean(v),1) for k, v in res.items()}, f"E={1e9*np.mean(ens):.1f}nJ dens={oq.telemetry.spikes_per_layer[0]/60/H/T:.3f}", flush=True)
