"""`gankit bench dcgan`: DCGAN training throughput on MNIST (28 px and resized to 64 px, batch 128),
gankit's `train()` against a textbook reference loop with the same architecture, in one run.

The reference is the loop of tutorials and pytorch/examples, kept honest: torchvision's MNIST with
per-sample transforms ([Resize] ToTensor Normalize), a shuffling DataLoader (drop_last; no worker
processes, which are slower than the main process on a 2-core machine), nn.Sequential G and D with
the same layers as gankit's `dcgan`, a final Sigmoid + BCELoss, default Adam (2e-4, betas 0.5/0.999),
the fake batch reused for the generator update and losses read with `.item()` every step.

Both sides report images/s of steady-state training, data loading included (warm-up steps excluded);
the headline ratio compares fp32 with fp32, and gankit's bf16 autocast figure is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from gankit.layout import RunLayout
from gankit.utils import GankitError, cpu_model, read_jsonl

BATCH, Z_DIM, WIDTH = 128, 100, 64
DEFAULT_STEPS = {28: 40, 64: 8}  # timed steps per side (after warm-up)


def textbook_models(size: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The DCGAN of gankit's `dcgan` at 28 or 64 px for 1-channel images, written out layer by layer."""
    ngf = ndf = WIDTH
    if size == 28:
        G = nn.Sequential(
            nn.ConvTranspose2d(Z_DIM, ngf * 2, 7, 1, 0, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=True), nn.Tanh(),
        )  # fmt: skip
        D = nn.Sequential(
            nn.Conv2d(1, ndf, 4, 2, 1, bias=True), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, 7, 1, 0), nn.Sigmoid(),
        )  # fmt: skip
    elif size == 64:
        G = nn.Sequential(
            nn.ConvTranspose2d(Z_DIM, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=True), nn.Tanh(),
        )  # fmt: skip
        D = nn.Sequential(
            nn.Conv2d(1, ndf, 4, 2, 1, bias=True), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0), nn.Sigmoid(),
        )  # fmt: skip
    else:
        raise ValueError(f"the reference DCGAN is written for 28 or 64 px, not {size}")
    return G, D


def mnist_raw(root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    if not (raw / "train-images-idx3-ubyte.gz").exists():
        raise GankitError(
            f"bench dcgan needs MNIST: no {raw}/train-images-idx3-ubyte.gz "
            "(set GANKIT_DATA or --data-root to the folder that holds MNIST/raw)"
        )
    return raw


def reference_loop(
    size: int, steps: int, root: Path, warmup: int = 3, device: str = "cpu"
) -> float:
    """Images/s of the textbook loop over `steps` steps after `warmup` steps (on `device`: the
    tutorials' `.to(device)` of models and of each batch)."""
    from torchvision import datasets, transforms

    torch.manual_seed(0)
    with (
        tempfile.TemporaryDirectory() as tmp
    ):  # torchvision extracts next to the .gz: link them here
        (Path(tmp) / "MNIST" / "raw").mkdir(parents=True)
        for f in mnist_raw(root).glob("*.gz"):
            os.symlink(f.resolve(), Path(tmp) / "MNIST" / "raw" / f.name)
        tf = [transforms.Resize(size)] if size != 28 else []
        tf += [transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]
        dataset = datasets.MNIST(tmp, train=True, download=True, transform=transforms.Compose(tf))
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=BATCH, shuffle=True, drop_last=True
        )
        G, D = textbook_models(size)
        G, D = G.to(device), D.to(device)
        for m in (*G.modules(), *D.modules()):  # the DCGAN paper's N(0, 0.02) init
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
        criterion = nn.BCELoss()
        opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        done, start, log = 0, 0.0, []
        while done < warmup + steps:
            for real, _ in loader:
                if done == warmup:
                    start = time.perf_counter()
                real = real.to(device)
                b = real.shape[0]
                ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
                D.zero_grad()
                loss_real = criterion(D(real).view(-1), ones)
                loss_real.backward()
                fake = G(torch.randn(b, Z_DIM, 1, 1, device=device))
                loss_fake = criterion(D(fake.detach()).view(-1), zeros)
                loss_fake.backward()
                opt_d.step()
                G.zero_grad()
                loss_g = criterion(D(fake).view(-1), ones)
                loss_g.backward()
                opt_g.step()
                log.append((loss_real.item() + loss_fake.item(), loss_g.item()))
                done += 1
                if done == warmup + steps:
                    break
        if device != "cpu":
            torch.cuda.synchronize()
        return steps * BATCH / (time.perf_counter() - start)


def gankit_run(size: int, steps: int, root: Path, levers: list[str], warmup: int = 3) -> float:
    """Images/s of gankit's `train()` (dcgan_mnist preset at `size`) in its steady state.

    Log windows of `warmup` steps: the first (warm-up, model build) is dropped; snapshots and
    checkpoints happen only at the last step, after the timed windows.
    """
    from gankit.config import load_config
    from gankit.trainer import train

    steps = -(-steps // warmup) * warmup
    total = warmup + steps
    overrides = [f"data.root={root}", f"data.img_size={size}", "train.epochs=0", f"train.steps={total}",
                 f"train.log_every={warmup}", f"train.sample_every={total}", f"train.ckpt_every={total}",
                 "train.progress=false", f"model.g.ngf={WIDTH}", f"model.d.ndf={WIDTH}",
                 f"data.batch_size={BATCH}", *levers]  # fmt: skip
    cfg = load_config("dcgan_mnist", overrides)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run")
        rows = [r for r in read_jsonl(RunLayout(Path(tmp) / "run").metrics) if "it_s" in r]
    timed = rows[1:]  # each window is `warmup` steps long
    seconds = sum(warmup / r["it_s"] for r in timed)
    return len(timed) * warmup * BATCH / seconds


LEVERS = {
    "fp32": [],
    "fp32 channels_last": ["train.channels_last=true"],
    "bf16 autocast": ["train.amp=true"],
    "bf16 autocast channels_last": ["train.amp=true", "train.channels_last=true"],
}


def run(args: argparse.Namespace) -> dict:
    root = Path(args.data_root or os.environ.get("GANKIT_DATA", "data"))
    mnist_raw(root)
    threads, device = torch.get_num_threads(), getattr(args, "device", None) or "cpu"
    if device != "cpu" and not torch.cuda.is_available():
        raise GankitError(f"bench dcgan --device {device}: no CUDA device on this machine")
    where = (
        torch.cuda.get_device_name(0)
        if device != "cpu"
        else f"{cpu_model()} ({threads} torch threads)"
    )
    print(f"device: {where}, torch {torch.__version__}, batch {BATCH}")
    results: dict = {
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "threads": threads,
        "sizes": {},
    }
    for size in args.sizes:
        steps = args.steps or DEFAULT_STEPS.get(size, 8)
        ref = reference_loop(size, args.ref_steps or steps, root, device=device)
        print(f"[{size} px] reference (textbook loop, fp32): {ref:,.0f} img/s")
        ours = {}
        for name, levers in LEVERS.items():
            ours[name] = gankit_run(size, steps, root, [*levers, f"train.device={device}"])
            print(f"[{size} px] gankit {name}: {ours[name]:,.0f} img/s ({ours[name] / ref:.2f}x)")
        best_fp32 = max(v for k, v in ours.items() if k.startswith("fp32"))
        best_bf16 = max(v for k, v in ours.items() if k.startswith("bf16"))
        print(
            f"[{size} px] ratio: {best_fp32 / ref:.2f}x (fp32 vs fp32); bf16: {best_bf16 / ref:.2f}x"
        )
        results["sizes"][size] = {"ref_img_s": ref, **{f"gankit {k} img_s": v for k, v in ours.items()},
                                  "ratio": best_fp32 / ref, "ratio_bf16": best_bf16 / ref}  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results
