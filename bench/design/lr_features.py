import numpy as np, warnings
warnings.filterwarnings("ignore")
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from regulator.tasks.nanosensor import NanosensorFamily
fam = NanosensorFamily()
def base(x): return x - x[:, :, :4].mean(2, keepdims=True)
def pool(x, T=8): B,C,L = x.shape; return x.reshape(B,C,T,L//T).mean(3)
def l2n(x): f = x.reshape(len(x), -1); return (f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-6)).reshape(x.shape)
F = {
 "raw": lambda x, s: x,
 "base": lambda x, s: base(x),
 "base+pool8": lambda x, s: pool(base(x)),
 "base+l2": lambda x, s: l2n(base(x)),
 "base+chsc+l2": lambda x, s: l2n(base(x) / (np.sqrt((base(s)**2).mean((0,2)))+0.05)[None,:,None]),
 "base+chsc+l2+pool8": lambda x, s: pool(l2n(base(x) / (np.sqrt((base(s)**2).mean((0,2)))+0.05)[None,:,None])),
 "base+chsc+l2+pool4": lambda x, s: pool(l2n(base(x) / (np.sqrt((base(s)**2).mean((0,2)))+0.05)[None,:,None]), 4),
}
for K in (1, 5, 10):
    r = np.random.default_rng([K, 5]); res = {}
    for i in range(30):
        env = fam.environment_from_seed(2**31 + i); ep = fam.episode(env, K, 60, r)
        for name, f in F.items():
            fs = f(ep.support_x, ep.support_x).reshape(len(ep.support_x), -1); fq = f(ep.query_x, ep.support_x).reshape(len(ep.query_x), -1)
            sc = StandardScaler().fit(fs)
            m = LogisticRegression(C=1.0, max_iter=2000).fit(sc.transform(fs), ep.support_y)
            res.setdefault(name+" LR", []).append((m.predict(sc.transform(fq)) == ep.query_y).mean())
            P = np.stack([fs[ep.support_y == c].mean(0) for c in range(5)])
            d = ((fq[:, None] - P[None]) ** 2).sum(-1)
            res.setdefault(name+" NCM", []).append((d.argmin(1) == ep.query_y).mean())
    print(K, {k: round(100*np.mean(v),1) for k, v in res.items()}, flush=True)
