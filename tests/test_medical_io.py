"""Medical image reading on real files shipped inside installed packages (found at test time)."""

import os

import numpy as np
import pytest
from PIL import Image

from unimedvl.errors import DataError
from unimedvl.imaging.medical_io import WINDOW_PRESETS, LoadedImage, image_size, load_array, load_image, parse_path_spec

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")

DICOM_DIR = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
NIFTI_DIR = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data")


def packaged(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        pytest.skip(f"{name} is not bundled with the installed package")
    return path


def dcm(name):
    return packaged(DICOM_DIR, name)


def nii(name):
    return packaged(NIFTI_DIR, name)


def dipy_t1():
    dipy = pytest.importorskip("dipy")
    return packaged(os.path.join(os.path.dirname(dipy.__file__), "data", "files"), "t1_coronal_slice.npy")


def grey(image: Image.Image) -> np.ndarray:
    array = np.asarray(image)
    assert image.mode == "RGB" and (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    return array[..., 0]


# --------------------------------------------------------------------------------------------- DICOM


def test_ct_rescale_gives_hounsfield_units():
    ds = pydicom.dcmread(dcm("CT_small.dcm"))
    loaded = load_array(dcm("CT_small.dcm"))
    assert loaded.units == "HU" and loaded.kind == "dicom"
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(loaded.pixels, expected)
    assert loaded.pixels.min() < 0  # intercept -1024 applied: air/fat are negative HU


def test_lung_window_maps_minus_600_hu_to_mid_grey():
    loaded = load_array(dcm("CT_small.dcm"), window="lung")
    assert loaded.window == (-1350.0, 150.0)
    hu = np.array([[-2000.0, -1350.0, -600.0, 150.0, 900.0]], dtype=np.float32)
    probe = LoadedImage(hu, loaded.window)
    assert probe.to_uint8().tolist() == [[0, 0, 128, 255, 255]]
    # Every CT pixel follows the same linear map (to within rounding of exact halves).
    expected = np.clip((loaded.pixels.astype(np.float64) + 1350.0) / 1500.0 * 255.0, 0, 255)
    shown = grey(load_image(dcm("CT_small.dcm") + "#window=lung")).astype(np.float64)
    assert np.abs(shown - expected).max() <= 0.5 + 1e-6


@pytest.mark.parametrize(
    "name, centre, width", [("brain", 40, 80), ("bone", 400, 1800), ("abdomen", 50, 400), ("mediastinum", 50, 350)]
)
def test_named_presets_match_centre_width_syntax(name, centre, width):
    assert WINDOW_PRESETS[name] == (centre, width)
    by_name = np.asarray(load_image(dcm("CT_small.dcm"), window=name))
    by_numbers = np.asarray(load_image(f"{dcm('CT_small.dcm')}#window={centre},{width}"))
    np.testing.assert_array_equal(by_name, by_numbers)


def test_brain_window_spans_0_to_80_hu():
    window = load_array(dcm("CT_small.dcm"), window="brain").window
    brain = LoadedImage(np.array([[-10.0, 0.0, 40.0, 80.0, 1000.0]]), window)
    assert brain.to_uint8().tolist() == [[0, 0, 128, 255, 255]]


def test_windows_change_what_the_user_sees():
    lung = grey(load_image(dcm("CT_small.dcm"), window="lung"))
    bone = grey(load_image(dcm("CT_small.dcm"), window="bone"))
    assert lung.mean() > bone.mean() + 40  # soft tissue is near-white in lung window, dark in bone


def test_mr_uses_the_file_window_by_default():
    ds = pydicom.dcmread(dcm("MR_small.dcm"))
    loaded = load_array(dcm("MR_small.dcm"))
    centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
    assert loaded.window == (centre - width / 2, centre + width / 2)
    assert load_array(dcm("MR_small.dcm"), window="minmax").window == (loaded.pixels.min(), loaded.pixels.max())
    with pytest.raises(DataError, match="no WindowCenter"):
        load_array(dcm("CT_small.dcm"), window="file")


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(dcm("CT_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "inverted.dcm"
    ds.save_as(path)
    normal = grey(load_image(dcm("CT_small.dcm"), window="soft_tissue"))
    inverted = grey(load_image(path, window="soft_tissue"))
    np.testing.assert_array_equal(inverted, 255 - normal)


def test_rgb_dicom_keeps_its_colours():
    image = load_image(dcm("examples_rgb_color.dcm"))
    assert image.size == (320, 240)
    np.testing.assert_array_equal(np.asarray(image), pydicom.dcmread(dcm("examples_rgb_color.dcm")).pixel_array)


def test_palette_dicom_is_expanded_to_rgb():
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(dcm("examples_palette.dcm"))
    image = np.asarray(load_image(dcm("examples_palette.dcm")))
    assert image.shape == (350, 800, 3)
    np.testing.assert_array_equal(image, apply_color_lut(ds.pixel_array, ds) >> 8)
    assert (image[..., 0] != image[..., 2]).any()  # really coloured, not grey


def test_multi_frame_selection():
    path = dcm("examples_ybr_color.dcm")  # 30-frame ultrasound cine
    first = np.asarray(load_image(path))
    np.testing.assert_array_equal(first, np.asarray(load_image(path + "#frame=0")))
    later = np.asarray(load_image(path, frame=20))
    assert first.shape == later.shape == (240, 320, 3) and not np.array_equal(first, later)
    with pytest.raises(DataError, match="frame=30 but the file has 30 frame"):
        load_image(path + "#frame=30")
    with pytest.raises(DataError, match="frame=30 but the file has 30 frame"):
        image_size(path, frame=30)


def test_not_a_dicom_file(tmp_path):
    fake = tmp_path / "scan.dcm"
    fake.write_bytes(b"hello")
    with pytest.raises(DataError, match=r"scan.dcm: not a DICOM file"):
        load_image(fake)


# --------------------------------------------------------------------------------------------- NIfTI


def test_nifti_middle_slice_by_default_with_percentile_window():
    path = nii("anatomical.nii")  # 33 x 41 x 25
    volume = np.asarray(nibabel.load(path).dataobj, dtype=np.float32)
    loaded = load_array(path)
    assert loaded.meta["slice"] == 12 and loaded.meta["axis"] == 2
    np.testing.assert_array_equal(loaded.pixels, np.flipud(volume[:, :, 12].T))
    low, high = np.percentile(volume[:, :, 12], (0.5, 99.5))
    assert loaded.window == pytest.approx((low, high))
    assert load_image(path).size == (33, 41) == image_size(path)
    np.testing.assert_array_equal(np.asarray(load_image(path)), np.asarray(load_image(path + "#slice=12")))


def test_nifti_axis_and_slice_from_fragment():
    path = nii("anatomical.nii")
    volume = np.asarray(nibabel.load(path).dataobj, dtype=np.float32)
    loaded = load_array(path + "#axis=0&slice=3")
    np.testing.assert_array_equal(loaded.pixels, np.flipud(volume[3].T))
    assert image_size(path + "#axis=0&slice=3") == (41, 25)
    with pytest.raises(DataError, match="slice=25 but axis 2 has 25 slice"):
        load_image(path + "#slice=25")
    with pytest.raises(DataError, match="t=1 given but the image is 3-D"):
        load_image(path, t=1)


def test_nifti_4d_picks_volume_zero_unless_t():
    path = nii("example4d.nii.gz")  # 128 x 96 x 24 x 2
    v0, v1 = load_array(path), load_array(path + "#t=1")
    np.testing.assert_array_equal(v0.pixels, load_array(path, t=0).pixels)
    assert v0.pixels.shape == (96, 128) and not np.array_equal(v0.pixels, v1.pixels)
    with pytest.raises(DataError, match="t=2 but the series has 2 volume"):
        image_size(path + "#t=2")


def test_nifti_ct_can_use_hu_presets(tmp_path):
    hu = np.full((8, 8, 3), -600, dtype=np.int16)
    path = tmp_path / "ct.nii.gz"
    nibabel.save(nibabel.Nifti1Image(hu, np.eye(4)), path)
    assert grey(load_image(f"{path}#window=lung")).tolist() == [[128] * 8] * 8


# --------------------------------------------------------------------------------------------- numpy


def test_npy_in_unit_range_is_taken_as_is():
    path = dipy_t1()
    array = np.load(path)
    image = grey(load_image(path))
    np.testing.assert_array_equal(image, np.rint(array * 255).astype(np.uint8))


def test_npy_other_ranges_and_shapes(tmp_path):
    path = tmp_path / "hu.npy"
    np.save(path, np.array([[-1000.0, 0.0], [500.0, 1000.0]]))
    assert grey(load_image(path)).tolist() == [[0, 128], [191, 255]]  # min..max
    bad = tmp_path / "vol.npy"
    np.save(bad, np.zeros((4, 5, 6)))
    with pytest.raises(DataError, match=r"shape \(4, 5, 6\) is not an image"):
        image_size(bad)


# --------------------------------------------------------------------------------------------- raster


def test_png_and_tiff_round_trip_real_images(tmp_path):
    from skimage import data

    ihc = data.immunohistochemistry()
    Image.fromarray(ihc).save(tmp_path / "ihc.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "ihc.png")), ihc)
    retina = data.retina()[::4, ::4]  # 353 x 353 fundus, small for speed
    Image.fromarray(retina).save(tmp_path / "retina.tif")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "retina.tif")), retina)
    assert image_size(tmp_path / "retina.tif") == (retina.shape[1], retina.shape[0])


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_16_bit_uses_full_range_unless_asked(tmp_path, suffix):
    from skimage import data

    twelve_bit = (data.immunohistochemistry()[..., 0].astype(np.uint16) * 16)[:64, :96]  # 0..4080
    path = tmp_path / f"xray16{suffix}"
    Image.fromarray(twelve_bit).save(path)
    full = grey(load_image(path))
    np.testing.assert_array_equal(full, np.rint(twelve_bit / 65535 * 255).astype(np.uint8))
    assert full.max() <= 16  # full range: 12-bit data look dark...
    stretched = grey(load_image(f"{path}#window=minmax"))
    assert stretched.min() == 0 and stretched.max() == 255  # ...minmax stretches them
    assert image_size(path) == (96, 64)


def test_grey_8_bit_png_becomes_rgb(tmp_path):
    array = (np.arange(12 * 10) % 256).astype(np.uint8).reshape(12, 10)
    Image.fromarray(array).save(tmp_path / "g.png")
    np.testing.assert_array_equal(grey(load_image(tmp_path / "g.png")), array)


# --------------------------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    "spec",
    [
        "CT_small.dcm",
        "MR_small.dcm",
        "examples_rgb_color.dcm",
        "examples_palette.dcm",
        "examples_ybr_color.dcm#frame=2",
        "anatomical.nii#axis=1",
        "example4d.nii.gz#t=1&axis=0&slice=5",
    ],
)
def test_image_size_matches_loaded_size(spec):
    name, _, fragment = spec.partition("#")
    path = nii(name) if ".nii" in name else dcm(name)
    full = f"{path}#{fragment}" if fragment else path
    assert image_size(full) == load_image(full).size


def test_parse_path_spec_and_hash_in_real_names(tmp_path):
    assert parse_path_spec("a/b.nii.gz#axis=1&slice=4") == ("a/b.nii.gz", {"axis": "1", "slice": "4"})
    odd = tmp_path / "case#1.png"
    Image.new("L", (5, 3)).save(odd)
    assert load_image(odd).size == (5, 3)  # an existing file name with '#' is a plain path


@pytest.mark.parametrize(
    "spec_suffix, kwargs, expected",
    [
        ("#window=lungs", {}, "window='lungs' is unknown"),
        ("#colour=1", {}, "unknown option 'colour'"),
        ("#slice=3", {}, "option 'slice' does not apply to dicom"),
        ("#frame=x", {}, "frame='x' must be an integer"),
        ("#window=40,-5", {}, "window width must be positive"),
        ("#percentile=99,1", {}, "percentile=99,1 needs 0 <= low < high <= 100"),
        ("#oops", {}, "must look like key=value"),
        ("", {"format": "jpeg2"}, "format='jpeg2' is unknown"),
    ],
)
def test_bad_options_name_the_option(spec_suffix, kwargs, expected):
    with pytest.raises(DataError, match=None) as info:
        load_image(dcm("CT_small.dcm") + spec_suffix, **kwargs)
    assert expected in str(info.value) and "CT_small.dcm" in str(info.value)


def test_missing_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"gone\.png: file not found"):
        load_image(tmp_path / "gone.png")
    with pytest.raises(DataError, match=r"gone\.nii\.gz: file not found"):
        image_size(f"{tmp_path / 'gone.nii.gz'}#slice=3")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(DataError, match=r"notes\.png: not an image file"):
        image_size(text)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match=r"broken\.nii\.gz: unreadable NIfTI"):
        load_image(broken)
