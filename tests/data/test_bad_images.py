"""Bad and unusual files in folder sources: each is decoded right, skipped and counted, or refused in one line.

Every file is made here with Pillow, numpy or `tf.io`. "Right" means the pixels
Pillow's ``Image.open(path).convert("RGB")`` gives, except 16-bit greyscale
(Pillow clips it at 255): there every value keeps its high byte, ``v >> 8``.
"""

import io
import logging
import os
import threading

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from nfnet_keras.data import sources
from nfnet_keras.data.sources import DatasetError
from nfnet_keras.preprocessing import decode_image, load_image

ORIENTATION = 0x0112  # the EXIF tag


def _pixels(seed, h=10, w=12, channels=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, channels) if channels > 1 else (h, w)).astype(np.uint8)


def _save(path, image, fmt, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **kwargs)
    return path


def _write_bytes(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _jpeg_bytes(seed):
    buffer = io.BytesIO()
    Image.fromarray(_pixels(seed)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _make_two_good_classes(root):
    """``root/cat/{0,1}.png`` and ``root/dog/{0,1}.png``, lossless RGB."""
    for c, cls in enumerate(("cat", "dog")):
        for i in range(2):
            _save(root / cls / f"{i}.png", Image.fromarray(_pixels(10 * c + i)), "PNG")


def _decoded_by_name(source, split="train"):
    """``{file name: (pixels, label)}`` as the input pipeline decodes them."""
    ds = source.make_dataset(split).map(lambda raw, label: (source.decode(raw), label))
    names = source.example_names(split)
    return {str(name): (image.numpy(), int(label)) for name, (image, label) in zip(names, ds)}


def _labels_by_name(source, split="train"):
    return {str(name): int(label) for name, label in zip(source.example_names(split), source.labels(split))}


def _pillow_rgb(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _load_error(root, **kwargs):
    with pytest.raises(DatasetError) as info:
        sources.load_source(str(root), **kwargs)
    return str(info.value)


def _run_with_timeout(function, seconds):
    """``function()``'s result, or a test failure if it has not returned after ``seconds``."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"did not finish within {seconds} s")
    return result["value"]


# Corrupt and non-image files -------------------------------------------------------------


def test_truncated_jpeg_is_refused_in_one_line_naming_the_file(tmp_path):
    _make_two_good_classes(tmp_path)
    good = _jpeg_bytes(5)
    _write_bytes(tmp_path / "dog" / "truncated.jpg", good[: len(good) // 2])
    message = _load_error(tmp_path)
    assert "\n" not in message
    assert "dog/truncated.jpg" in message and "skip_corrupt=True" in message
    assert "function_node" not in message  # TensorFlow's graph prefix is not part of the reason


def test_truncated_jpeg_is_skipped_and_counted_without_shifting_labels(tmp_path):
    _make_two_good_classes(tmp_path)
    good = _jpeg_bytes(5)
    _write_bytes(tmp_path / "cat" / "0_truncated.jpg", good[: len(good) // 2])
    source = sources.load_source(str(tmp_path), skip_corrupt=True)
    assert [name for _, name, _ in source.skipped] == ["cat/0_truncated.jpg"]
    assert _labels_by_name(source) == {"cat/0.png": 0, "cat/1.png": 0, "dog/0.png": 1, "dog/1.png": 1}


def test_text_file_with_an_image_extension_is_refused_naming_it(tmp_path):
    _make_two_good_classes(tmp_path)
    _write_bytes(tmp_path / "cat" / "x.jpg", b"this is a text file, not a JPEG\n")
    message = _load_error(tmp_path)
    assert "\n" not in message and "cat/x.jpg" in message and "Unknown image file format" in message


def test_text_file_with_an_image_extension_is_skipped_and_counted(tmp_path):
    _make_two_good_classes(tmp_path)
    _write_bytes(tmp_path / "cat" / "x.jpg", b"this is a text file, not a JPEG\n")
    source = sources.load_source(str(tmp_path), skip_corrupt=True)
    assert len(source.skipped) == 1 and source.skipped[0][:2] == ("train", "cat/x.jpg")
    assert source.num_examples("train") == 4


def test_file_with_another_extension_is_ignored(tmp_path):
    _make_two_good_classes(tmp_path)
    _write_bytes(tmp_path / "cat" / "notes.txt", b"shot in 2021\n")
    source = sources.load_source(str(tmp_path))
    assert source.skipped == () and sorted(_labels_by_name(source)) == [
        "cat/0.png",
        "cat/1.png",
        "dog/0.png",
        "dog/1.png",
    ]


def test_corrupt_file_whose_name_holds_a_newline_is_named_on_one_line(tmp_path):
    _make_two_good_classes(tmp_path)
    _write_bytes(tmp_path / "dog" / "bad\nname.jpg", b"not an image")
    message = _load_error(tmp_path)
    assert "\n" not in message and "dog/bad\\nname.jpg" in message


# Colour modes and bit depths -------------------------------------------------------------


COLOUR_MODES = {
    "cmyk_jpeg": ("CMYK", "JPEG", "x.jpg"),
    "grey_jpeg": ("L", "JPEG", "x.jpg"),
    "grey_png": ("L", "PNG", "x.png"),
    "rgba_png": ("RGBA", "PNG", "x.png"),
    "grey_alpha_png": ("LA", "PNG", "x.png"),
    "palette_png": ("P", "PNG", "x.png"),
}


@pytest.mark.parametrize("case", sorted(COLOUR_MODES))
def test_image_in_another_colour_mode_decodes_to_pillows_rgb(tmp_path, case):
    mode, fmt, name = COLOUR_MODES[case]
    rgba = Image.fromarray(_pixels(3, channels=4), "RGBA")
    original = rgba if mode.endswith("A") else rgba.convert("RGB")
    path = _save(tmp_path / "odd" / name, original.convert(mode), fmt)
    _make_two_good_classes(tmp_path)
    with Image.open(path) as stored:
        assert stored.mode == mode  # the file really is in that mode
    source = sources.load_source(str(tmp_path))
    pixels, label = _decoded_by_name(source)[f"odd/{name}"]
    assert pixels.dtype == np.uint8 and pixels.shape == (10, 12, 3)
    np.testing.assert_array_equal(pixels, _pillow_rgb(path))
    np.testing.assert_array_equal(load_image(path), pixels)  # the predict command agrees
    assert label == source.class_names.index("odd")


def test_16_bit_grey_png_keeps_the_high_byte_of_each_value(tmp_path):
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    path = _save(tmp_path / "deep" / "grey16.png", Image.fromarray(values), "PNG")
    _make_two_good_classes(tmp_path)
    with Image.open(path) as stored:
        assert stored.mode == "I;16"
    source = sources.load_source(str(tmp_path))
    pixels, _ = _decoded_by_name(source)["deep/grey16.png"]
    want = np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    np.testing.assert_array_equal(pixels, want)
    np.testing.assert_array_equal(load_image(path), want)


def test_16_bit_rgb_png_keeps_the_high_byte_of_each_value_like_pillow(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (16, 20, 3)).astype(np.uint16)
    path = _write_bytes(tmp_path / "deep" / "rgb16.png", tf.io.encode_png(values).numpy())
    _make_two_good_classes(tmp_path)
    source = sources.load_source(str(tmp_path))
    pixels, _ = _decoded_by_name(source)["deep/rgb16.png"]
    np.testing.assert_array_equal(pixels, (values >> 8).astype(np.uint8))
    np.testing.assert_array_equal(pixels, _pillow_rgb(path))
    np.testing.assert_array_equal(load_image(path), pixels)


def test_exif_rotated_jpeg_decodes_its_stored_pixels_in_training_and_prediction(tmp_path):
    image = Image.fromarray(_pixels(7, h=10, w=20))
    exif = image.getexif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(tmp_path / "turned" / "exif6.jpg", image, "JPEG", exif=exif)
    _make_two_good_classes(tmp_path)
    with Image.open(path) as stored:
        assert stored.getexif()[ORIENTATION] == 6
        assert ImageOps.exif_transpose(stored).size == (10, 20)  # displayed upright: 20 high
    source = sources.load_source(str(tmp_path))
    pipeline, _ = _decoded_by_name(source)["turned/exif6.jpg"]
    assert pipeline.shape == (10, 20, 3)  # stored orientation, not the displayed one
    np.testing.assert_array_equal(pipeline, _pillow_rgb(path))
    np.testing.assert_array_equal(pipeline, load_image(path))
    np.testing.assert_array_equal(pipeline, decode_image(path.read_bytes()).numpy())  # the SavedModel's decoder


# Folder structure ----------------------------------------------------------------------------


def test_empty_class_folder_keeps_its_index_and_logs_one_warning_naming_it(tmp_path, caplog):
    _make_two_good_classes(tmp_path)
    (tmp_path / "bird").mkdir()
    with caplog.at_level(logging.WARNING, logger="nfnet_keras.data.sources"):
        source = sources.load_source(str(tmp_path))
    assert source.class_names == ("bird", "cat", "dog")
    assert _labels_by_name(source) == {"cat/0.png": 1, "cat/1.png": 1, "dog/0.png": 2, "dog/1.png": 2}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'bird'" in warnings[0]


def test_non_ascii_file_and_class_names_are_read_with_labels_of_the_sorted_classes(tmp_path):
    chat = _save(tmp_path / "chat_été" / "ünïcode.png", Image.fromarray(_pixels(1)), "PNG")
    neko = _save(tmp_path / "猫" / "1.png", Image.fromarray(_pixels(2)), "PNG")
    _save(tmp_path / "dog" / "0.png", Image.fromarray(_pixels(3)), "PNG")
    source = sources.load_source(str(tmp_path))
    assert source.class_names == ("chat_été", "dog", "猫")
    decoded = _decoded_by_name(source)
    np.testing.assert_array_equal(decoded["chat_été/ünïcode.png"][0], _pillow_rgb(chat))
    np.testing.assert_array_equal(decoded["猫/1.png"][0], _pillow_rgb(neko))
    assert {name: label for name, (_, label) in decoded.items()} == {
        "chat_été/ünïcode.png": 0,
        "dog/0.png": 1,
        "猫/1.png": 2,
    }


def test_corrupt_file_with_a_non_ascii_name_is_named(tmp_path):
    _make_two_good_classes(tmp_path)
    _write_bytes(tmp_path / "猫" / "壊れた.jpg", b"\xff\xd8\xff garbage")
    message = _load_error(tmp_path)
    assert "\n" not in message and "猫/壊れた.jpg" in message


def test_file_name_that_is_not_utf8_is_read(tmp_path):
    _make_two_good_classes(tmp_path)
    encoded = io.BytesIO()
    Image.fromarray(_pixels(9)).save(encoded, format="PNG")
    try:
        with open(os.path.join(os.fsencode(tmp_path / "dog"), b"latin1_\xe9.png"), "wb") as handle:
            handle.write(encoded.getvalue())
    except OSError:
        pytest.skip("this file system only takes UTF-8 names")
    source = sources.load_source(str(tmp_path))
    decoded = _decoded_by_name(source)
    name = os.fsdecode(b"dog/latin1_\xe9.png")
    np.testing.assert_array_equal(decoded[name][0], _pixels(9))
    assert decoded[name][1] == 1


def test_symlink_loops_inside_a_class_folder_end_the_listing_with_each_file_once(tmp_path):
    _make_two_good_classes(tmp_path)
    _save(tmp_path / "cat" / "sub" / "2.png", Image.fromarray(_pixels(2)), "PNG")
    os.symlink("..", tmp_path / "cat" / "sub" / "up")  # sub/up -> cat
    os.symlink("..", tmp_path / "cat" / "root")  # cat/root -> the dataset root, which holds dog/
    source = _run_with_timeout(lambda: sources.load_source(str(tmp_path)), seconds=60)
    assert _labels_by_name(source) == {
        "cat/0.png": 0,
        "cat/1.png": 0,
        "cat/sub/2.png": 0,
        "dog/0.png": 1,
        "dog/1.png": 1,
    }


def test_file_reached_through_a_link_in_its_own_class_is_listed_once(tmp_path):
    _make_two_good_classes(tmp_path)
    os.symlink("0.png", tmp_path / "cat" / "alias.png")
    os.symlink(tmp_path / "dog", tmp_path / "dog" / "again")  # dog/again -> dog
    assert sources.list_images(tmp_path / "cat") == [str(tmp_path / "cat" / n) for n in ("0.png", "1.png")]
    assert sources.load_source(str(tmp_path)).num_examples("train") == 4


def test_file_reachable_from_two_class_folders_is_refused_naming_both(tmp_path):
    _make_two_good_classes(tmp_path)
    os.symlink(os.path.join("..", "dog"), tmp_path / "cat" / "dogs")  # cat/dogs -> dog
    message = _load_error(tmp_path)
    assert "\n" not in message
    assert "cat/dogs/0.png (class 'cat') and dog/0.png (class 'dog') are the same file" in message


def test_class_folder_linking_to_the_dataset_root_is_refused(tmp_path):
    _make_two_good_classes(tmp_path)
    os.symlink(".", tmp_path / "everything")  # a "class" that is the whole dataset
    message = _run_with_timeout(lambda: _load_error(tmp_path), seconds=60)
    assert "\n" not in message and "class folder 'everything' is a link to a folder that contains" in message
