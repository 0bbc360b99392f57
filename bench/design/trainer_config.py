import sys, time, numpy as np, torch
from regulator.meta.train import TrainConfig, build_trainer, train_steps, finalise
from regulator.meta.adapt import adapt
from regulator.meta.evaluate import query_metric, HELDOUT_SEED_BASE
from regulator.chip.network import ChipInstance
torch.set_num_threads(1)
H, T, NB, HOLD, IT = map(int, sys.argv[1:6])
cfg = TrainConfig(family="nanosensor", profile="loihi", algorithm="prototype", scope="readout",
    hidden=(H,), n_steps=T, dt_s=0.005, encoder="binned", encoder_config={"n_bins": NB, "hold_steps": HOLD},
    normalisation="feature", episode_normalisation=True, iterations=IT, meta_batch=8, k_shots=(1, 5, 10),
    n_query=30, outer_lr=3e-3, seed=0, tau_syn_inv=float(sys.argv[6]) if len(sys.argv) > 6 else 200.0)
tr = build_trainer(cfg); t0 = time.time()
train_steps(tr, IT, progress=False)
print("train s", round(time.time() - t0, 1), flush=True)
b = finalise(tr)
print("E/inf nJ", 1e9 * b.calibration["energy_per_inference_j"], "density", b.calibration["spike_density"])
fam = tr.family
for K in (1, 5, 10):
    rng = np.random.default_rng([0, K, 0xE7A1]); accs = []; lj = []
    for t in range(40):
        env = fam.environment_from_seed(HELDOUT_SEED_BASE + int(rng.integers(0, 2**30)))
        ep = fam.episode(env, K, 60, rng); cs = int(rng.integers(0, 2**31 - 1))
        chip = ChipInstance.create(b.profile, b.cfg, cs)
        new, rep = adapt(b, ep.support_x, ep.support_y, chip)
        accs.append(query_metric(new, chip, ep.query_x, ep.query_y)); lj.append(rep.learning_energy_j)
    print(K, round(100 * np.mean(accs), 1), "learn inferences", np.mean(lj) / b.calibration["energy_per_inference_j"], flush=True)
