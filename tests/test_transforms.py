"""Image transforms: the resize rule, normalisation round trip, YAML construction, patch order."""

import random

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from unimedvl.errors import ConfigError
from unimedvl.imaging.transforms import ImageTransform, to_pil, to_tensor
from unimedvl.models.embeddings import patchify, unpatchify

VAE = ImageTransform(image_stride=16, max_image_size=1024, min_image_size=512)
VIT = ImageTransform(image_stride=14, max_image_size=980, min_image_size=378, max_pixels=2_007_040)


@pytest.mark.parametrize(
    "transform, size, expected",
    [
        (VAE, (2048, 1024), (1024, 512)),  # long edge capped
        (VAE, (100, 100), (512, 512)),  # small images are enlarged to the min short edge
        (VAE, (512, 512), (512, 512)),  # already fine: untouched
        (VAE, (4000, 500), (1024, 128)),  # min and max cannot both hold: the long edge wins
        (VAE, (300, 700), (432, 1024)),  # enlarging to 512 would give 1195 > 1024: stops at max
        (VIT, (1411, 1411), (980, 980)),  # fundus image
        (VIT, (256, 256), (378, 378)),
        (VIT, (640, 480), (644, 476)),  # within limits: only rounded to the stride
        (ImageTransform(16, 64, 1), (3, 3), (16, 16)),  # at least one stride per side
    ],
)
def test_reference_resize_rule(transform, size, expected):
    assert transform.target_size(*size) == expected


def test_max_pixels_caps_the_area():
    transform = ImageTransform(
        image_stride=14, max_image_size=4000, min_image_size=378, max_pixels=1_000_000, resize_rule="strict"
    )
    width, height = transform.target_size(3000, 2000)
    assert width * height <= 1_000_000 and width % 14 == 0 and height % 14 == 0
    assert width * height > 0.9 * 1_000_000  # capped, not shrunk needlessly
    assert abs(width / height - 1.5) < 0.03  # aspect ratio kept


def test_the_release_rule_scales_by_the_area_ratio_itself():
    # The release scales an image above max_pixels by max_pixels / area (not its square root): 1/6 here.
    release = ImageTransform(image_stride=14, max_image_size=4000, min_image_size=378, max_pixels=1_000_000)
    assert release.target_size(3000, 2000) == (504, 336)


# (width, height) -> (new width, new height) under the release's rule, worked out by hand from its
# description (issue 23): the two examples where the earlier rule differed by a stride, extreme aspect
# ratios, sizes needing no scaling, for both transforms and both minimum sizes of each.
RELEASE_TABLE = {
    (16, 1024, 512, None): {
        (704, 406): (896, 512),
        (1197, 761): (1024, 656),
        (21, 882): (32, 1024),
        (3727, 902): (1024, 256),
        (5000, 200): (1024, 48),
        (512, 512): (512, 512),
        (896, 672): (896, 672),
        (640, 480): (688, 512),
        (980, 980): (976, 976),
    },
    (16, 1024, 256, None): {
        (704, 406): (704, 400),
        (300, 200): (384, 256),
        (21, 882): (32, 1024),
        (5000, 200): (1024, 48),
        (256, 256): (256, 256),
        (640, 480): (640, 480),
    },
    (14, 980, 378, 2_007_040): {
        (1197, 761): (980, 616),
        (704, 406): (700, 406),
        (21, 882): (28, 980),
        (3727, 902): (980, 238),
        (5000, 200): (980, 42),
        (512, 512): (518, 518),
        (980, 980): (980, 980),
        (256, 256): (378, 378),
        (640, 480): (644, 476),
    },
    (14, 980, 224, 2_007_040): {
        (1197, 761): (980, 616),
        (300, 200): (336, 224),
        (256, 256): (252, 252),
        (5000, 200): (980, 42),
        (518, 518): (518, 518),
        (1024, 512): (980, 490),
    },
}


@pytest.mark.parametrize("limits", list(RELEASE_TABLE), ids=lambda k: f"stride{k[0]}-min{k[2]}")
def test_the_release_resize_rule_table(limits):
    stride, max_size, min_size, max_pixels = limits
    transform = ImageTransform(stride, max_size, min_size, max_pixels)
    got = {size: transform.target_size(*size) for size in RELEASE_TABLE[limits]}
    assert got == RELEASE_TABLE[limits]
    # The earlier rule is still there by name, and differs exactly where the issue found it did.
    strict = ImageTransform(stride, max_size, min_size, max_pixels, resize_rule="strict")
    if limits == (16, 1024, 512, None):
        assert strict.target_size(704, 406) == (880, 512)
    if limits == (14, 980, 224, 2_007_040):
        assert strict.target_size(1197, 761) == (980, 630)


def test_rule_invariants_on_random_sizes():
    rng = random.Random(0)
    for transform in (
        VAE,
        VIT,
        ImageTransform(16, 500, 100, max_pixels=90_000),
        ImageTransform(16, 500, 100, max_pixels=90_000, resize_rule="strict"),
    ):
        for _ in range(300):
            w, h = rng.randint(1, 5000), rng.randint(1, 5000)
            new_w, new_h = transform.target_size(w, h)
            stride = transform.image_stride
            assert new_w % stride == 0 and new_h % stride == 0 and min(new_w, new_h) >= stride
            assert max(new_w, new_h) <= transform.max_image_size
            if transform.max_pixels:
                assert new_w * new_h <= transform.max_pixels
            rows, cols = transform.grid_size(w, h)
            assert (rows * stride, cols * stride) == (new_h, new_w)


def test_call_gives_normalised_tensor_and_to_pil_inverts_it():
    array = np.zeros((40, 70, 3), dtype=np.uint8)
    array[:, 35:] = 255
    array[:20, :, 1] = 128
    image = Image.fromarray(array)
    tensor = ImageTransform(14, 980, 28)(image)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 42, 70)
    assert tensor.min() >= -1 and tensor.max() <= 1
    resized = ImageTransform(14, 980, 28).resize(image)
    np.testing.assert_array_equal(np.asarray(to_pil(tensor)), np.asarray(resized))
    exact = to_tensor(Image.fromarray(array))
    assert exact[0, 0, 0] == -1 and exact[0, 0, 69] == 1  # black -> -1, white -> +1
    np.testing.assert_array_equal(np.asarray(to_pil(exact)), array)


def test_grey_images_become_three_channels():
    tensor = VAE(Image.new("L", (600, 600), color=255))
    assert tensor.shape == (3, 608, 608) and torch.allclose(tensor, torch.ones_like(tensor))


def test_from_yaml_mix_dicts():
    mix = yaml.safe_load(
        """
        image_transform_args:     {image_stride: 16, max_image_size: 1024, min_image_size: 512}
        vit_image_transform_args: {image_stride: 14, max_image_size: 980, min_image_size: 378, max_pixels: 2_007_040}
        """
    )
    assert ImageTransform.from_config(mix["image_transform_args"]) == VAE
    assert ImageTransform.from_config(mix["vit_image_transform_args"]) == VIT


@pytest.mark.parametrize(
    "args, expected",
    [
        ({"image_stride": 16, "max_image_size": 1024, "min_image_size": 512, "max_size": 9}, "max_size"),
        ({"image_stride": 16, "max_image_size": 1024}, "min_image_size"),
        ({"image_stride": 16, "max_image_size": 256, "min_image_size": 512}, "min_image_size=512 is larger"),
        ({"image_stride": 0, "max_image_size": 256, "min_image_size": 64}, "image_stride must be a positive"),
        ({"image_stride": 16, "max_image_size": "1k", "min_image_size": 64}, "max_image_size must be an integer"),
    ],
)
def test_bad_transform_config_names_the_key(args, expected):
    with pytest.raises(ConfigError, match=None) as info:
        ImageTransform.from_config(args, source="mix.yaml: vit_image_transform_args")
    assert expected in str(info.value)


def test_patchify_order_is_row_major_patches_then_u_v_c():
    channels, patch, rows, cols = 3, 2, 2, 3
    c, y, x = torch.meshgrid(
        torch.arange(channels), torch.arange(rows * patch), torch.arange(cols * patch), indexing="ij"
    )
    image = (c + 10 * x + 1000 * y).float()  # every pixel says where it came from
    tokens = patchify(image, patch)
    assert tokens.shape == (rows * cols, patch * patch * channels)
    flat, pixels = tokens.tolist(), image.tolist()
    for i in range(rows):
        for j in range(cols):
            for u in range(patch):
                for v in range(patch):
                    for ch in range(channels):
                        value = flat[i * cols + j][(u * patch + v) * channels + ch]
                        assert value == pixels[ch][i * patch + u][j * patch + v]
    assert torch.equal(unpatchify(tokens, rows, cols, patch, 3), image)


def test_patchify_vit_and_latent_shapes():
    assert patchify(torch.zeros(3, 28, 42), 14).shape == (6, 588)
    latent = torch.randn(16, 8, 12)
    tokens = patchify(latent, 2)
    assert tokens.shape == (24, 64)
    assert torch.equal(unpatchify(tokens, 4, 6, 2, 16), latent)
    with pytest.raises(ValueError, match="not divisible by the patch size 14"):
        patchify(torch.zeros(3, 30, 28), 14)
