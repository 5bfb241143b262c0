"""`gankit bench toy`: the 2-D toy workload (G 16->100->2, D 2->100->1, 10,000 points, batch 128,
1,000 epochs = 79,000 steps) through gankit's full `train()` against a textbook reference loop.

The reference is the loop found in tutorials and the pytorch/examples DCGAN, kept honest: a DataLoader
over a TensorDataset (shuffle, batch 128), nn.Sequential models with a final Sigmoid, BCELoss, default
Adam, the fake batch reused for the generator update, losses read with `.item()` every step.
Both run in this process on the same CPU threads; the ratio is gankit steps/s over reference steps/s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from gankit.utils import cpu_model

N_POINTS, BATCH, EPOCHS, Z_DIM, HIDDEN = 10_000, 128, 1000, 16, 100


def reference_loop(steps: int, seed: int = 0) -> float:
    """Textbook GAN loop on the heart density; returns steps/s over `steps` steps (after warm-up)."""
    from gankit.data.toy import heart

    torch.manual_seed(seed)
    data = heart().sample(N_POINTS, torch.Generator().manual_seed(seed))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data), batch_size=BATCH, shuffle=True
    )
    G = nn.Sequential(nn.Linear(Z_DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2))
    D = nn.Sequential(nn.Linear(2, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1), nn.Sigmoid())
    criterion = nn.BCELoss()
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    warmup, done, start = 200, 0, 0.0
    losses = []
    while done < steps + warmup:
        for (real,) in loader:
            if done == warmup:
                start = time.perf_counter()
            b = real.shape[0]
            ones, zeros = torch.ones(b, 1), torch.zeros(b, 1)
            opt_d.zero_grad()
            loss_real = criterion(D(real), ones)
            loss_real.backward()
            fake = G(torch.randn(b, Z_DIM))
            loss_fake = criterion(D(fake.detach()), zeros)
            loss_fake.backward()
            opt_d.step()
            opt_g.zero_grad()
            loss_g = criterion(D(fake), ones)
            loss_g.backward()
            opt_g.step()
            losses.append((loss_real.item() + loss_fake.item(), loss_g.item()))
            done += 1
            if done == steps + warmup:
                break
    return steps / (time.perf_counter() - start)


def gankit_run(steps: int | None, run_dir: Path) -> tuple[float, int, float]:
    """gankit's `train()` on the `heart` preset with the benchmark's workload.

    Returns (steps/s, steps, wall seconds); wall time includes data, logging, snapshots and checkpoints.
    """
    from gankit.config import load_config
    from gankit.trainer import train

    overrides = [f"train.epochs={EPOCHS}", f"data.n_points={N_POINTS}", f"data.batch_size={BATCH}",
                 "train.progress=false", f"model.z_dim={Z_DIM}"]  # fmt: skip
    if steps is not None:
        overrides += ["train.epochs=0", f"train.steps={steps}"]
    cfg = load_config("heart", overrides)
    t0 = time.perf_counter()
    state = train(cfg, run_dir)
    wall = time.perf_counter() - t0
    return state.step / wall, state.step, wall


def run(args: argparse.Namespace) -> dict:
    from gankit.config import load_config

    # Both loops run on the thread count the preset uses (1: measured fastest for these tiny MLPs,
    # for the reference loop too), so the ratio compares code, not threading.
    threads = load_config("heart").train.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    print(f"cpu: {cpu_model()} ({threads} torch thread(s)), torch {torch.__version__}")
    ref_steps = args.ref_steps or 3000
    ref = reference_loop(ref_steps)
    print(f"reference (textbook loop): {ref:,.0f} steps/s over {ref_steps} steps")
    with tempfile.TemporaryDirectory() as tmp:
        ours, steps, wall = gankit_run(args.steps, Path(tmp) / "run")
    print(f"gankit train (heart preset, fp32): {ours:,.0f} steps/s, {steps} steps in {wall:.1f} s")
    if args.steps is None:
        print(f"full workload ({EPOCHS} epochs of {N_POINTS} points, batch {BATCH}): {wall:.1f} s")
    result = {"cpu": cpu_model(), "torch": torch.__version__, "threads": threads, "ref_steps_s": ref,
              "gankit_steps_s": ours, "steps": steps, "wall_s": wall, "ratio": ours / ref}  # fmt: skip
    print(f"ratio: {ours / ref:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result
