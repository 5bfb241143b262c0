"""The Lightning integration trains gankit's models with gankit's train_step, step for step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gankit.config import load_config
from gankit.utils import GankitError

pytest.importorskip("lightning")  # an optional extra (installed by gankit[dev])
# Lightning's advice for epoch-based loaders; `LeafSpec` is Lightning's own use of a deprecated torch API
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers", "ignore:.*max_epochs", "ignore:.*LeafSpec"
)


def _trainer(**kwargs):
    import lightning

    return lightning.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **kwargs,
    )  # fmt: skip


@pytest.fixture
def cfg(tiny_overrides):
    return load_config("toy_ring", [*tiny_overrides, "train.ema_decay=0.5"])


def _reference(cfg, n):
    """gankit's own loop body (gankit.trainer without logging): Pair.update by autograd."""
    from gankit.data import data_from_config
    from gankit.pair import build_pair
    from gankit.schedule import total_steps
    from gankit.steps import train_step

    data = data_from_config(cfg)
    state = build_pair(cfg, data.shape, torch.device("cpu"))
    for i in range(n):
        out = state.update([data.batch(i)[0]], [None], cfg, i, total_steps(cfg, None))
    assert state.update_fn is train_step  # the autograd step, as Lightning takes it
    return state, out


def _assert_same(a, b):
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(x, y)


def test_missing_lightning_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.delitem(sys.modules, "gankit.integrations.lightning", raising=False)
    with pytest.raises(
        GankitError, match=r"needs the lightning package: pip install 'gankit\[lightning\]'"
    ):
        import gankit.integrations.lightning  # noqa: F401


def test_refuses_what_it_cannot_honour_before_reading_data():
    """A G that starts from the data's mean (gan2014_mnist) and DiffAugment's stream are refused by
    name, before any data is read (data.root points nowhere)."""
    from gankit.integrations.lightning import GANModule

    for preset, key in (("gan2014_mnist", "model.g.output_bias"), ("dcgan_mnist", "train.augment")):
        extra = ["train.augment=color"] if preset == "dcgan_mnist" else []
        cfg = load_config(preset, ["data.root=/nonexistent", "data.download=false", *extra])
        with pytest.raises(GankitError, match=key.split(".")[-1]):
            GANModule(cfg)


def test_fit_equals_gankit_train_step(cfg):
    from gankit.integrations.lightning import GANDataModule, GANModule, lightning_steps
    from gankit.models import MLPDiscriminator, MLPGenerator

    module = GANModule(cfg)
    assert isinstance(module.G, MLPGenerator) and isinstance(module.D, MLPDiscriminator)
    g0 = [p.detach().clone() for p in module.G.parameters()]
    trainer = _trainer(max_steps=lightning_steps(cfg, 4))
    trainer.fit(module, GANDataModule(cfg))
    assert (trainer.global_step, module.step) == (8, 4)  # 2 optimizer steps per gankit step
    logged = trainer.callback_metrics
    assert all(torch.isfinite(logged[k]) for k in ("loss_d", "loss_g", "d_real", "d_fake"))
    assert not any(torch.equal(a, b) for a, b in zip(g0, module.G.parameters(), strict=True))

    state, out = _reference(cfg, 4)  # same seed, same batches: bit-identical on CPU
    _assert_same(module.G, state.G)
    _assert_same(module.D, state.D)
    _assert_same(module.G_ema, state.G_ema)
    assert all(torch.equal(logged[k], out[k]) for k in out)  # logged at step 4 (log_every 2)


def test_stops_after_train_steps_and_resumes_exactly(cfg, tmp_path):
    from gankit.integrations.lightning import GANDataModule, GANModule, lightning_steps

    straight = GANModule(cfg)
    trainer = _trainer()  # no max_steps: GANModule stops after train.steps = 8 gankit steps
    trainer.fit(straight, GANDataModule(cfg))
    assert (trainer.global_step, straight.step) == (16, 8)

    first = GANModule(cfg)
    trainer = _trainer(max_steps=lightning_steps(cfg, 3))
    trainer.fit(first, GANDataModule(cfg))
    trainer.save_checkpoint(tmp_path / "step3.ckpt")

    loaded = GANModule.load_from_checkpoint(tmp_path / "step3.ckpt", weights_only=True)
    assert loaded.step == 3 and loaded.cfg == cfg
    _assert_same(loaded.G, first.G)

    trainer = _trainer()  # a new Trainer continues the same module where it stopped
    trainer.fit(first, GANDataModule(cfg))
    assert (trainer.global_step, first.step) == (10, 8)
    _assert_same(first.G, straight.G)

    resumed = GANModule(cfg)
    trainer = _trainer()
    trainer.fit(resumed, GANDataModule(cfg), ckpt_path=tmp_path / "step3.ckpt")
    assert (trainer.global_step, resumed.step) == (16, 8)
    _assert_same(resumed.G, straight.G)  # the noise stream and the data order were restored
    _assert_same(resumed.D, straight.D)
    _assert_same(resumed.G_ema, straight.G_ema)


def test_sample_matches_gankit_sample_of_its_checkpoint(cfg, tmp_path):
    from gankit.checkpoint import load_checkpoint
    from gankit.factory import load_generator
    from gankit.integrations.lightning import GANModule
    from gankit.run import draw

    module = GANModule(cfg)
    x = module.sample(5, seed=1)
    assert x.shape == (5, 2) and torch.equal(x, module.sample(5, seed=1))
    assert not torch.equal(x, module.sample(5, seed=2))
    path = module.save_gankit_checkpoint(tmp_path / "last.pt")
    assert torch.equal(draw(load_checkpoint(path), n=5, seed=1)[0], x)  # `gankit sample --seed 1`
    _assert_same(load_generator(path), module.G_ema)


def test_data_module_yields_gankit_batches_in_order(cfg):
    from torch.utils.data import DataLoader

    from gankit.data import data_from_config
    from gankit.integrations.lightning import GANDataModule, GANSteps

    source = data_from_config(cfg)
    items = list(DataLoader(GANSteps(source, 2, 1, 4), batch_size=None))
    assert [i for i, _, _ in items] == [1, 2, 3]
    for i, reals, labels in items:  # d_steps = 2 batches per step
        assert all(torch.equal(r, source.batch(2 * i + j)[0]) for j, r in enumerate(reals))
        assert labels == [None, None]
    workers = list(DataLoader(GANSteps(source, 2, 1, 4), batch_size=None, num_workers=2))
    assert [i for i, _, _ in workers] == [1, 2, 3]
    assert all(torch.equal(a[1][1], b[1][1]) for a, b in zip(items, workers, strict=True))
    dm = GANDataModule(cfg)
    (i, reals, _), *_ = dm.train_dataloader()
    assert i == 0 and torch.equal(reals[0], source.batch(0)[0])


def test_report_reads_a_lightning_made_checkpoint(cfg, tmp_path):
    from gankit.cli import main
    from gankit.integrations.lightning import GANModule

    path = GANModule(cfg).save_gankit_checkpoint(tmp_path / "ring.pt")
    assert main(["report", str(path)]) == 0
    html = (tmp_path / "ring.report.html").read_text()
    assert "Verdict:" in html and "ring" in html and "decision" in html  # toy plots from G and D
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ring.pt", "ring.report.html"]


def test_fit_honours_train_threads(tiny_overrides):
    from gankit.integrations.lightning import GANDataModule, GANModule, lightning_steps

    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    cfg = load_config("toy_ring", [*tiny_overrides, f"train.threads={want}"])
    try:
        _trainer(max_steps=lightning_steps(cfg, 2)).fit(GANModule(cfg), GANDataModule(cfg))
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)


ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
LIGHTNING_FIT = """
import sys
import lightning
from gankit.config import load_config
from gankit.integrations.lightning import GANDataModule, GANModule, lightning_steps

devices, strategy, precision, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
cfg = load_config("toy_ring", sys.argv[5:])
module = GANModule(cfg)
trainer = lightning.Trainer(accelerator="cpu", devices=devices, strategy=strategy,
                            precision=precision, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            max_steps=lightning_steps(cfg, cfg.train.steps))
trainer.fit(module, GANDataModule(cfg))
if trainer.global_rank == 0:
    module.save_gankit_checkpoint(out)
"""


def _fit_script(tmp_path, *args):
    """Run LIGHTNING_FIT as a script (Lightning's ddp strategy relaunches the script per rank)."""
    script = tmp_path / "fit.py"
    script.write_text(LIGHTNING_FIT)
    done = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def test_two_device_ddp_fit_equals_gankit_two_process_run(tiny_overrides, tmp_path):
    from gankit.checkpoint import load_checkpoint

    over = [o for o in tiny_overrides if "threads" not in o]
    over += [
        "train.threads=1",
        "optim.lr_schedule=constant",
        "loss.r1_weight=0.1",
        "model.d.pack=2",
    ]
    _fit_script(tmp_path, 2, "ddp", "32-true", tmp_path / "lightning.pt", *over)
    sets = [a for o in over for a in ("--set", o)]
    done = subprocess.run([sys.executable, "-m", "gankit", "train", "toy_ring", "--nproc", "2",
                           "--run-dir", str(tmp_path / "gankit"), *sets], capture_output=True,
                          text=True, timeout=300, env=ENV)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    a = load_checkpoint(tmp_path / "lightning.pt")["pairs"][0]
    b = load_checkpoint(tmp_path / "gankit" / "checkpoints" / "last.pt")["pairs"][0]
    for key in ("G", "D"):
        for name, x in a[key].items():
            torch.testing.assert_close(x, b[key][name], atol=1e-6, rtol=1e-5)  # the same step


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_fits_train_and_stay_finite(tiny_overrides, tmp_path, precision):
    from gankit.checkpoint import load_checkpoint

    over = [o for o in tiny_overrides if "threads" not in o] + ["train.threads=1"]
    _fit_script(tmp_path, 1, "auto", precision, tmp_path / "m.pt", *over)
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["step"] == 8
    g = ckpt["pairs"][0]["G"]
    assert all(torch.isfinite(v).all() for v in g.values())
