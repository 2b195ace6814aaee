import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from medxfer.errors import ImageReadError
from medxfer.images import load_image


def test_8bit_and_16bit_scale_by_their_own_depth(tmp_path):
    a8 = np.array([[0, 128, 255]], dtype=np.uint8)
    Image.fromarray(a8).save(tmp_path / "g8.png")
    np.testing.assert_allclose(load_image(tmp_path / "g8.png", min_side=1), a8 / 255.0, atol=1e-7)
    a16 = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(load_image(tmp_path / "g16.png", min_side=1), a16 / 65535.0, atol=1e-7)


def test_rgba_and_rgb_become_luminance(tmp_path):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (10, 200, 30)
    rgba = np.dstack([rgb, np.full((2, 2), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c.png")
    expect = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255
    np.testing.assert_allclose(load_image(tmp_path / "c.png", min_side=1), expect, atol=1e-6)


def test_bundled_rgba_release_file_matches_its_gray_channel(sample_root):
    path = sample_root / "images" / "00000100_000.png"
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        r = np.asarray(im)[..., 0] / 255.0
    np.testing.assert_allclose(load_image(path, min_side=1), r, atol=1e-5)


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40), dtype=np.uint8)
    a[:, :20] = 255  # left half bright, landscape
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "r.jpg", min_side=1)
    assert out.shape == (40, 20)  # portrait after applying the tag
    assert out[:20].mean() > 0.9 and out[20:].mean() < 0.1  # bright part moved to the top


@pytest.mark.parametrize("content,reason", [(b"", "empty"), (b"not an image at all", "not a readable image"),
                                           (None, "corrupt or truncated")])
def test_bad_files_name_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    if content is None:
        Image.fromarray(np.zeros((64, 64), np.uint8) + 7).save(path)
        path.write_bytes(path.read_bytes()[:60])
    else:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=rf"cannot read image '.*bad\.png': .*{reason}"):
        load_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "nope.png")


def _write_dicom(path, pixels, photometric, slope=1.0, intercept=0.0):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = "P123"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_monochrome1_is_inverted(tmp_path):
    px = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    _write_dicom(tmp_path / "m2.dcm", px, "MONOCHROME2")
    _write_dicom(tmp_path / "m1.dcm", px, "MONOCHROME1", slope=2.0, intercept=-5.0)
    m2 = load_image(tmp_path / "m2.dcm", min_side=1)
    m1 = load_image(tmp_path / "m1.dcm", min_side=1)
    np.testing.assert_allclose(m2, px / 4000.0, atol=1e-6)
    np.testing.assert_allclose(m1, 1.0 - px / 4000.0, atol=1e-6)  # rescale is linear: same shape


def test_dicom_window_and_rle_compressed(tmp_path):
    import pydicom
    from pydicom.uid import RLELossless

    px = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    _write_dicom(tmp_path / "w.dcm", px, "MONOCHROME2")
    ds = pydicom.dcmread(tmp_path / "w.dcm")
    ds.WindowCenter, ds.WindowWidth = 1500, 1000  # shows 1000..2000; the rest saturates
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "w_rle.dcm")
    assert pydicom.dcmread(tmp_path / "w_rle.dcm").file_meta.TransferSyntaxUID == RLELossless
    out = load_image(tmp_path / "w_rle.dcm", min_side=1)
    assert out[0, 0] == 0.0 and out[1, 1] == 1.0  # below / above the window
    assert 0.0 <= out[0, 1] < 0.05 and 0.95 < out[1, 0] <= 1.0  # window edges


def _png_header_only(path, w, h):
    """A PNG whose header claims w x h pixels (a decompression bomb's header) and no pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_oversized_images_are_refused_before_decoding(tmp_path):
    bomb = _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageReadError, match="20000 x 20000 = 400,000,000 pixels, above the limit"):
        load_image(bomb)
    big = _png_header_only(tmp_path / "big.png", 5000, 5000)
    with pytest.raises(ImageReadError, match="--max-pixels"):
        load_image(big, max_pixels=1000 * 1000)
    with pytest.raises(ImageReadError, match="400,000,000 pixels, above the limit of 178,956,970"):
        load_image(bomb, max_pixels=None)  # Pillow's own guard, named and explained the same way


def _pydicom_files():
    import pydicom
    from pathlib import Path

    return sorted((Path(pydicom.__file__).parent / "data").rglob("*.dcm"))


def test_every_dicom_file_shipped_with_pydicom_decodes_or_is_refused_clearly():
    """pydicom's own test corpus (104 files: compressed transfer syntaxes, colour, multi-frame,
    files without pixels, broken headers): each gives a 2-D image in [0, 1] or an
    ImageReadError naming the file, never another exception."""
    from medxfer.errors import MedxferError

    files = _pydicom_files()
    assert len(files) >= 100
    decoded = 0
    for f in files:
        try:
            arr = load_image(f, min_side=1)  # the decoders, not the size rule
        except MedxferError as exc:
            assert f.name in str(exc)
            continue
        assert arr.ndim == 2 and arr.dtype == np.float32 and np.isfinite(arr).all(), f.name
        assert 0 <= arr.min() and arr.max() <= 1, f.name
        decoded += 1
    assert decoded >= 65  # JPEG lossless, JPEG-LS, JPEG 2000 and colour decode (GDCM)


def test_compressed_and_colour_dicom_decode_to_the_same_pixels():
    import pydicom
    from pathlib import Path

    d = Path(pydicom.__file__).parent / "data" / "test_files"
    plain = load_image(d / "MR_small.dcm")
    for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"):
        np.testing.assert_allclose(load_image(d / name), plain, atol=1e-6, err_msg=name)
    rgb = load_image(d / "SC_rgb_rle.dcm")  # colour -> luminance, as for a colour PNG
    assert rgb.shape == (100, 100)
    for name in ("SC_rgb_rle_16bit.dcm", "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        np.testing.assert_allclose(load_image(d / name), rgb, atol=0.01, err_msg=name)
    assert load_image(d / "SC_rgb_rle_2frame.dcm").shape == (100, 100)  # the first frame
    with pytest.raises(ImageReadError, match="holds no image"):
        load_image(d / "rtplan.dcm")
