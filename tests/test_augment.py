"""DiffAugment: policy parsing, determinism, gradients and the exact effect of each op."""

from __future__ import annotations

import pytest
import torch

from gankit.augment import (
    POLICIES,
    cutout_size,
    diff_augment,
    parse_policy,
    rand_brightness,
    rand_contrast,
    rand_cutout,
    rand_saturation,
    rand_translation,
    translation_shift,
)

OPS = {
    "brightness": rand_brightness,
    "saturation": rand_saturation,
    "contrast": rand_contrast,
    "translation": rand_translation,
    "cutout": rand_cutout,
}
FULL = ("color", "translation", "cutout")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 4, c: int = 3, h: int = 16, w: int = 16, dtype=torch.float32) -> torch.Tensor:
    return (torch.rand(b, c, h, w, generator=gen(123)) * 2 - 1).to(dtype)


def distinct(b: int = 8, c: int = 2, h: int = 16, w: int = 16) -> torch.Tensor:
    """Images whose values are all distinct and non-zero, so zeros can only come from the op."""
    return torch.arange(1, b * c * h * w + 1, dtype=torch.float64).reshape(b, c, h, w)


# parse_policy -------------------------------------------------------------------------------------


def test_parse_policy_valid() -> None:
    assert parse_policy("color,translation,cutout") == ("color", "translation", "cutout")
    assert parse_policy("cutout, color") == ("cutout", "color")
    assert parse_policy("") == ()
    assert parse_policy("  ") == ()
    assert POLICIES == ("color", "translation", "cutout")


@pytest.mark.parametrize(
    ("text", "bad"),
    [("color,flip", "'flip'"), ("Color", "'Color'"), ("color,,cutout", "''"), ("color,", "''")],
)
def test_parse_policy_unknown(text: str, bad: str) -> None:
    with pytest.raises(ValueError, match="^train.augment:") as err:
        parse_policy(text)
    msg = str(err.value)
    assert bad in msg
    assert all(name in msg for name in POLICIES)


def test_parse_policy_duplicate() -> None:
    with pytest.raises(ValueError, match=r"^train.augment: duplicate policy item 'color'"):
        parse_policy("color,cutout,color")


def test_diff_augment_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="^train.augment: unknown policy item 'flip'"):
        diff_augment(images(), ("flip",), gen())
    with pytest.raises(ValueError, match="^train.augment: expected"):
        diff_augment(torch.zeros(3, 8, 8), ("color",), gen())
    with pytest.raises(ValueError, match="^train.augment: expected"):
        diff_augment(torch.zeros(1, 3, 8, 8, dtype=torch.long), ("color",), gen())


# generic properties -------------------------------------------------------------------------------


def test_empty_policy_returns_same_object() -> None:
    x = images()
    g = gen()
    state = g.get_state()
    assert diff_augment(x, (), g) is x
    assert torch.equal(g.get_state(), state)  # no random numbers consumed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("policy", [*[(p,) for p in POLICIES], FULL])
def test_shape_and_dtype_preserved(policy: tuple[str, ...], dtype: torch.dtype) -> None:
    x = images(b=3, c=3, h=12, w=10, dtype=dtype)
    out = diff_augment(x, policy, gen())
    assert out.shape == x.shape
    assert out.dtype == dtype
    assert out.device == x.device
    assert torch.isfinite(out.float()).all()
    assert not torch.equal(out, x)


@pytest.mark.parametrize("policy", [*[(p,) for p in POLICIES], FULL])
def test_deterministic_given_seed(policy: tuple[str, ...]) -> None:
    x = images(b=8)
    a = diff_augment(x, policy, gen(1))
    b = diff_augment(x, policy, gen(1))
    c = diff_augment(x, policy, gen(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_generator_advances() -> None:
    x = images(b=8)
    g = gen(5)
    first = diff_augment(x, FULL, g)
    second = diff_augment(x, FULL, g)
    assert not torch.equal(first, second)


def test_global_rng_not_used() -> None:
    x = images(b=8)
    torch.manual_seed(0)
    a = diff_augment(x, FULL, gen(3))
    torch.manual_seed(99)
    b = diff_augment(x, FULL, gen(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(OPS))
def test_gradient_flows_through_each_op(name: str) -> None:
    x = images().requires_grad_(True)
    weight = torch.rand(x.shape, generator=gen(7))
    (OPS[name](x, gen()) * weight).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_gradient_flows_through_full_policy() -> None:
    x = images().requires_grad_(True)
    weight = torch.rand(x.shape, generator=gen(7))
    (diff_augment(x, FULL, gen()) * weight).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("policy", [*[(p,) for p in POLICIES], FULL])
def test_channels_last_matches_contiguous(policy: tuple[str, ...]) -> None:
    x = images(b=4, c=3, h=16, w=16)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out_cl = diff_augment(x_cl, policy, gen(4))
    torch.testing.assert_close(out_cl, diff_augment(x, policy, gen(4)))
    # Gradients also flow for channels_last inputs.
    x_cl.requires_grad_(True)
    diff_augment(x_cl, policy, gen(4)).sum().backward()
    assert x_cl.grad is not None and x_cl.grad.shape == x.shape


def test_cpu_generator_cpu_input() -> None:
    x = images()
    g = torch.Generator(device="cpu").manual_seed(0)
    out = diff_augment(x, FULL, g)
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, diff_augment(x, FULL, gen(0)), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_cuda_input_matches_cpu() -> None:
    x = images()
    out = diff_augment(x.cuda(), FULL, gen(0))
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), diff_augment(x, FULL, gen(0)))


# color: golden values from the same random stream ------------------------------------------------


def test_brightness_golden() -> None:
    x = images(b=5)
    r = torch.rand(5, 1, 1, 1, generator=gen(11))
    out = rand_brightness(x, gen(11))
    torch.testing.assert_close(out, x + (r - 0.5))
    # Property view: one shift per sample, constant over pixels, in [-0.5, 0.5).
    shift = out - x
    per_sample = shift.mean(dim=(1, 2, 3))
    torch.testing.assert_close(shift, per_sample[:, None, None, None].expand_as(shift))
    assert (per_sample >= -0.5).all() and (per_sample < 0.5).all()
    assert per_sample.std() > 0  # per-sample, not one shift for the batch


def test_saturation_golden() -> None:
    x = images(b=5)
    r = torch.rand(5, 1, 1, 1, generator=gen(12))
    out = rand_saturation(x, gen(12))
    m = x.mean(dim=1, keepdim=True)
    torch.testing.assert_close(out, m + (x - m) * (2 * r))
    # The per-pixel channel mean (the grey value) is unchanged.
    torch.testing.assert_close(out.mean(dim=1), x.mean(dim=1))


def test_contrast_golden() -> None:
    x = images(b=5)
    r = torch.rand(5, 1, 1, 1, generator=gen(13))
    out = rand_contrast(x, gen(13))
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(out, m + (x - m) * (r + 0.5))
    # The image mean is unchanged and deviations from it scale by one factor in [0.5, 1.5).
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)))
    factor = ((out - m) / (x - m)).flatten(1)
    torch.testing.assert_close(factor, factor[:, :1].expand_as(factor))
    assert (factor >= 0.5).all() and (factor < 1.5).all()


def test_color_is_brightness_saturation_contrast_in_order() -> None:
    x = images(b=5)
    g = gen(14)
    expected = rand_contrast(rand_saturation(rand_brightness(x, g), g), g)
    torch.testing.assert_close(diff_augment(x, ("color",), gen(14)), expected)


# translation --------------------------------------------------------------------------------------


def shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[i, j] = img[i + dy, j + dx], zero where that is outside. img: (C, H, W)."""
    _, h, w = img.shape
    out = torch.zeros_like(img)
    out[:, max(0, -dy) : min(h, h - dy), max(0, -dx) : min(w, w - dx)] = img[
        :, max(0, dy) : min(h, h + dy), max(0, dx) : min(w, w + dx)
    ]
    return out


def test_translation_shift_size() -> None:
    assert translation_shift(16, 16) == (2, 2)
    assert translation_shift(32, 28) == (4, 4)  # int(3.5 + 0.5) rounds half up
    assert translation_shift(12, 4) == (2, 1)
    assert cutout_size(16, 16) == (8, 8)
    assert cutout_size(15, 9) == (8, 5)


@pytest.mark.parametrize(("h", "w"), [(16, 16), (12, 20)])
def test_translation_is_integer_shift_with_zero_fill(h: int, w: int) -> None:
    x = distinct(b=16, h=h, w=w)
    out = rand_translation(x, gen(21))
    s_h, s_w = translation_shift(h, w)
    offsets = []
    for img, res in zip(x, out, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-s_h, s_h + 1)
            for dx in range(-s_w, s_w + 1)
            if torch.equal(res, shifted(img, dy, dx))
        ]
        assert len(matches) == 1, "output is not a zero-filled integer shift within [-s, s]"
        offsets.append(matches[0])
    # Per-sample offsets, and large shifts do occur.
    assert len(set(offsets)) > 1
    assert max(max(abs(dy), abs(dx)) for dy, dx in offsets) > 1


# cutout -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(16, 16), (15, 9)])
def test_cutout_zeroes_one_clipped_rectangle(h: int, w: int) -> None:
    x = distinct(b=32, h=h, w=w)
    out = rand_cutout(x, gen(31))
    c_h, c_w = cutout_size(h, w)
    sizes = []
    for img, res in zip(x, out, strict=True):
        zero = res == 0  # (C, H, W)
        assert torch.equal(zero, zero[:1].expand_as(zero)), "mask differs across channels"
        zero = zero[0]
        rows = zero.any(dim=1).nonzero().flatten()
        cols = zero.any(dim=0).nonzero().flatten()
        assert len(rows) > 0, "cutout removed nothing"
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        # The zeros are exactly their bounding box, and everything else is untouched.
        assert zero[top:bottom, left:right].all()
        assert int(zero.sum()) == (bottom - top) * (right - left)
        torch.testing.assert_close(res[:, ~zero], img[:, ~zero], rtol=0, atol=0)
        box_h, box_w = int(bottom - top), int(right - left)
        assert box_h <= c_h and box_w <= c_w
        # Clipped only by the image border: a short side must touch it.
        assert box_h == c_h or top == 0 or bottom == h
        assert box_w == c_w or left == 0 or right == w
        sizes.append((box_h, box_w))
    assert (c_h, c_w) in sizes  # unclipped patches occur
    assert len(set(sizes)) > 1  # and so do clipped ones
