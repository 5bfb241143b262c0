from __future__ import annotations

import pytest

from gankit.config import (
    Config,
    ConfigError,
    apply_overrides,
    coerce,
    config_from_dict,
    list_presets,
    load_config,
    parse_override,
    to_dict,
    to_yaml,
)


def test_every_preset_loads_and_round_trips_through_yaml(tmp_path):
    for name in list_presets():
        cfg = load_config(name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(to_yaml(cfg))
        assert load_config(str(path)) == cfg


def test_presets_include_the_toy_experiments():
    assert {"gauss1d", "split_normal", "heart", "toy_ring", "toy_grid"} <= set(list_presets())


def test_yaml_1e_minus_4_string_is_coerced_to_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr_d: 1e-4}\n")  # PyYAML reads 1e-4 as the string '1e-4'
    cfg = load_config(str(path))
    assert isinstance(cfg.optim.lr_d, float)
    assert cfg.optim.lr_d == pytest.approx(1e-4)


def test_set_overrides_nested_and_free_sections():
    cfg = load_config(
        "toy_ring", ["optim.lr_g=3e-4", "model.g.hidden=[8, 4]", "train.steps=7", "seed=3"]
    )
    assert cfg.optim.lr_g == pytest.approx(3e-4)
    assert cfg.model.g["hidden"] == (8, 4)  # coerced to the constructor's tuple[int, ...]
    assert cfg.train.steps == 7
    assert cfg.seed == 3


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key optim.lr; valid keys: optim.lr_g"):
        load_config("toy_ring", ["optim.lr=1"])
    with pytest.raises(ConfigError, match=r"unknown config key bogus; valid keys: seed, data"):
        load_config("toy_ring", ["bogus=1"])


def test_unknown_model_kwarg_lists_constructor_arguments():
    with pytest.raises(ConfigError, match=r"model.g.hiden; valid keys: model.g.hidden"):
        load_config("toy_ring", ["model.g.hiden=[3]"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("optim.lr_d=abc", r"optim.lr_d: expected a number, got 'abc'"),
        ("train.steps=1.5", r"train.steps: expected an integer"),
        ("train.progress=maybe", r"train.progress: expected true or false"),
        (
            "model.z_dist=cauchy",
            r"model.z_dist: 'cauchy' is not valid; choose from: normal, uniform",
        ),
        (
            "loss.name=hnge",
            r"unknown loss \(loss.name\) 'hnge'; choose from: nonsaturating, minimax",
        ),
        ("data.name=rng", r"unknown dataset \(data.name\) 'rng'; choose from: gauss1d"),
        ("data.batch_size=0", r"data.batch_size must be > 0"),
        ("loss.label_smoothing=1.5", r"loss.label_smoothing must be in \[0, 1\)"),
        ("optim.betas_g=[0.5]", r"optim.betas_g: expected 2 values"),
        ("eval.metrics=[fid_x]", r"unknown metric \(eval.metrics\) 'fid_x'"),
    ],
)
def test_bad_values_name_the_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config("toy_ring", [override])


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; choose from: .*toy_ring"):
        load_config("nope")


def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy_ring").mkdir()  # e.g. `gankit sweep toy_ring --out toy_ring`
    assert load_config("toy_ring").data.name == "ring"
    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError, match="config file not found: mine"):
        load_config("mine")
    (tmp_path / "toy_grid").write_text("data: {name: ring}\n")  # a file of that name is the file
    assert load_config("toy_grid").data.name == "ring"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: ring\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML \(line"):
        load_config(str(bad))


def test_parse_override_values_are_yaml():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("x=true") == (["x"], True)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("novalue")


def test_apply_overrides_does_not_mutate_input():
    raw = {"optim": {"lr_g": 1.0}}
    out = apply_overrides(raw, ["optim.lr_g=2"])
    assert raw["optim"]["lr_g"] == 1.0
    assert out["optim"]["lr_g"] == 2


def test_coerce_types():
    assert coerce("3", int, "k") == 3
    assert coerce(2, float, "k") == 2.0
    assert coerce([1, 2], tuple[float, float], "k") == (1.0, 2.0)
    assert coerce("modes", list[str], "k") == ["modes"]
    assert coerce(None, int | None, "k") is None
    with pytest.raises(ConfigError):
        coerce(True, int, "k")


def test_config_dict_round_trip_is_plain():
    cfg = load_config("gauss1d")
    d = to_dict(cfg)
    assert isinstance(d["optim"]["betas_g"], list)
    assert config_from_dict(d) == cfg
    assert isinstance(Config(), Config)


@pytest.mark.parametrize(("preset", "overrides", "match"), [
    ("toy_ring", ["optim.lr_d=.nan"], "optim.lr_d must be a finite number >= 0, got nan"),
    ("toy_ring", ["optim.lr_g=.inf"], "optim.lr_g must be a finite number >= 0, got inf"),
    ("toy_ring", ["loss.r1_weight=.nan"], "loss.r1_weight"),
    ("toy_ring", ["loss.gp_weight=-.inf"], "loss.gp_weight"),
    ("toy_ring", ["train.ema_decay=.nan"], "train.ema_decay must be in"),
    ("toy_ring", ["seed=18446744073709551616"], r"seed must be in \[0, 2\*\*63 - 1\]"),
    ("toy_ring", ["seed=-1"], "seed must be in"),
    ("toy_ring", ["data.params.num_modes=0"], "data.params: num_modes must be a positive"),
    ("toy_grid", ["data.params.std=-0.1"], "data.params: std must be a positive"),
    ("gauss1d", ["data.params.std=0"], "data.params: std"),
    ("toy_ring", ["optim.d_steps=1000000"], r"optim.d_steps must be in \[1, 100\]"),
    ("toy_ring", ["model.g.hidden=[0]"], "model.g.hidden: layer sizes must be >= 1"),
    ("toy_ring", ["model.d.hidden=[]"], "model.d.hidden"),
    ("toy_ring", ["model.d.dropout=1.5"], "model.d.dropout must be in"),
    ("dcgan_mnist", ["data.img_size=7"], "data.img_size=7: DCGAN models need"),
    ("dcgan_mnist", ["data.img_size=30"], "data.img_size=30"),
    ("dcgan_mnist", ["data.img_size=100000"], r"data.img_size must be in \[1, 1024\]"),
    ("dcgan_mnist", ["data.img_size=896"], "mnist images are 28 px; choose at most 112"),
    ("dcgan_mnist", ["model.g.ngf=0"], "model.g.ngf must be >= 1"),
    ("cdcgan_mnist", ["model.num_classes=3"], "model.num_classes=3 but mnist has 10 classes"),
])  # fmt: skip
def test_config_holes_are_one_line_errors_before_any_work(preset, overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_config(preset, overrides)
    assert "\n" not in str(err.value)


def test_the_users_steps_win_over_the_presets_epochs():
    assert load_config("cdcgan_mnist").train.epochs == 5
    cfg = load_config("cdcgan_mnist", ["train.steps=40"])
    assert (cfg.train.steps, cfg.train.epochs) == (40, 0)
    both = load_config("cdcgan_mnist", ["train.steps=40", "train.epochs=2"])
    assert both.train.epochs == 2  # both given: epochs counts, as documented


def test_amp_auto_follows_the_hardware(monkeypatch):
    import torch

    import gankit.utils as utils

    assert load_config("dcgan_mnist", ["train.amp=auto"]).train.amp == "auto"
    with pytest.raises(ConfigError, match="train.amp"):
        load_config("dcgan_mnist", ["train.amp=fast"])
    cpu = torch.device("cpu")
    assert utils.use_amp(True, cpu) and not utils.use_amp(False, cpu)
    for native in (True, False):
        monkeypatch.setattr(utils, "bf16_native", lambda d, native=native: native)
        assert utils.use_amp("auto", cpu) is native
