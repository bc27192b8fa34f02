"""Pictures for a model of your own: ``ImageInput``, the metadata's preprocessing kinds, and how ``Predictor``,
``paddle-mnist predict`` / ``evaluate`` and ``serve`` follow them (an arrays-only export refused at load)."""

from __future__ import annotations

import io
import json
import subprocess

import numpy as np
import paddle
import pytest
from PIL import Image
from test_export import RGB_SPEC, SmallRGB

from paddle_mnist_hapi import ImageInput, Predictor, create_model, specs_for
from paddle_mnist_hapi.deploy.export import export_model
from paddle_mnist_hapi.deploy.image_input import labelled_pictures, preprocessing_kind, resolve_preprocessing
from paddle_mnist_hapi.errors import ConfigError, ExportError, ImageError

from conftest import PYTHON, ROOT

RGB = ImageInput(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3)).for_input([3, 32, 32])


def picture(seed: int = 0, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def png_bytes(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- ImageInput


def test_a_png_of_the_models_size_becomes_exactly_the_normalized_array(tmp_path):
    pixels = picture()
    (tmp_path / "x.png").write_bytes(png_bytes(pixels))
    expected = ((pixels / np.float32(255) - np.float32([0.4, 0.5, 0.6])) / np.float32([0.2, 0.25, 0.3])).transpose(
        2, 0, 1
    )
    for source in (tmp_path / "x.png", str(tmp_path / "x.png"), png_bytes(pixels), Image.fromarray(pixels), pixels):
        x = RGB(source)
        assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
        np.testing.assert_allclose(x[0], expected, atol=1e-6)
    assert (RGB.picture(RGB(pixels)) == pixels).all()  # what the model saw, back as pixels


def test_channel_order_layout_and_grayscale():
    pixels = picture()
    bgr = ImageInput(channels="BGR").for_input([3, 32, 32])
    np.testing.assert_allclose(bgr(pixels)[0], pixels[:, :, ::-1].transpose(2, 0, 1) / np.float32(255), atol=1e-6)
    hwc = ImageInput(layout="HWC", scale=1.0).for_input([32, 32, 3])
    assert hwc(pixels).shape == (1, 32, 32, 3) and (hwc(pixels)[0] == pixels).all()
    gray = ImageInput(scale=1.0).for_input([1, 32, 32])
    assert gray.channels == "L"
    expected = np.asarray(Image.fromarray(pixels).convert("L"), np.float32)
    assert np.abs(gray(pixels)[0, 0] - expected).max() <= 1  # ITU-R 601 luminance, as PIL's convert("L")


def test_resize_stretch_and_center_crop():
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 255  # the middle half is white
    stretched = ImageInput(scale=1.0).for_input([3, 16, 16]).pixels(wide)
    cropped = ImageInput(scale=1.0, resize="center_crop").for_input([3, 16, 16]).pixels(wide)
    assert stretched.shape == cropped.shape == (16, 16, 3)
    assert stretched[:, 0].max() == 0 and stretched[:, 8].min() == 255  # the whole width squeezed in
    assert cropped.min() == 255  # only the middle 40x40 kept: all white


def test_transparency_16_bit_and_exif_are_read_as_a_viewer_shows_them():
    spec = ImageInput(scale=1.0).for_input([3, 4, 4])
    transparent = np.zeros((4, 4, 4), np.uint8)  # black, fully transparent
    assert (spec.pixels(png_bytes(transparent, "RGBA")) == 255).all()  # composited on white
    deep = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert (spec.pixels(deep) == 255).all()  # 16-bit scaled, not clipped
    with pytest.raises(ImageError, match="not a format Pillow recognizes"):
        spec.pixels(b"not a picture")
    with pytest.raises(ImageError, match="Expected a pixel array"):
        spec(np.zeros((4, 4, 3), np.float32))


@pytest.mark.parametrize(
    ("declared", "shape", "fragment"),
    [
        (ImageInput(), [784], "needs a model input of one picture"),
        (ImageInput(), [4, 32, 32], "has 4 channels"),
        (ImageInput(channels="L"), [3, 32, 32], "has 3 channels"),
        (ImageInput(size=(28, 28)), [3, 32, 32], "size=(28, 28) does not match"),
        (ImageInput(std=(1, 2)), [3, 32, 32], "std has 2 values"),
    ],
)
def test_a_declaration_the_input_cannot_take_is_refused(declared, shape, fragment):
    with pytest.raises(ExportError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        declared.for_input(shape)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"channels": "CMYK"}, "channels must be one of"),
        ({"std": 0}, "std must not contain 0"),
        ({"scale": -1}, "scale must be a positive number"),
        ({"resize": "fit"}, "resize must be"),
        ({"size": (32,)}, "size must be (height, width)"),
        ({"mean": "red"}, "mean must be a number"),
    ],
)
def test_bad_fields_are_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        ImageInput(**kwargs)


def test_the_kind_comes_from_the_metadata_or_for_old_exports_from_the_input():
    assert resolve_preprocessing(None, [1, 28, 28]) is None and resolve_preprocessing(None, [784]) is None
    assert resolve_preprocessing(None, [3, 32, 32])["kind"] == "none"
    assert resolve_preprocessing("none", [1, 28, 28])["kind"] == "none"
    with pytest.raises(ConfigError, match="preprocessing must be None"):
        resolve_preprocessing("rgb", [3, 32, 32])
    # an export of the release before: MNIST's description for every model, no "kind"
    legacy = {"preprocessing": {"grayscale": True, "size": [28, 28]}}
    assert preprocessing_kind(legacy, [1, 28, 28]) == "mnist_digits"
    assert preprocessing_kind(legacy, [3, 32, 32]) == "none"
    with pytest.raises(ExportError, match="not one this release knows"):
        preprocessing_kind({"preprocessing": {"kind": "audio"}}, [16000])


def test_labelled_pictures_refuses_folders_that_name_no_class(tmp_path):
    (tmp_path / "cat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "cat" / "1.png")
    assert labelled_pictures(tmp_path, ["dog", "cat"])[1].tolist() == [1]
    (tmp_path / "cats").mkdir()
    with pytest.raises(ConfigError, match=r"folders that name no class of the model: \['cats'\]"):
        labelled_pictures(tmp_path, ["dog", "cat"])
    with pytest.raises(ConfigError, match="No pictures in"):
        labelled_pictures(tmp_path / "cat", ["dog"])


# ----------------------------------------------------------------------------- consumers follow the metadata


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, str]:
    """The same 3x32x32 network exported with a declared preprocessing, and for arrays only."""
    folder = tmp_path_factory.mktemp("rgb_exports")
    paddle.seed(3)
    model = paddle.Model(SmallRGB(num_classes=3), RGB_SPEC)
    names = ["red", "green", "blue"]
    export_model(model, folder / "declared" / "net", class_names=names, preprocessing=RGB)
    export_model(model, folder / "arrays" / "net", class_names=names)  # no preprocessing given: arrays only
    return {"declared": str(folder / "declared" / "net"), "arrays": str(folder / "arrays" / "net"), "dir": folder}


def test_predictor_resizes_and_normalises_as_declared_and_names_the_class(exports, tmp_path):
    predictor = Predictor(exports["declared"])
    assert predictor.preprocessing == "image" and predictor.class_names == ["red", "green", "blue"]
    large = Image.fromarray(picture(5)).resize((96, 96), Image.Resampling.NEAREST)  # the same picture, 3x larger
    large.save(tmp_path / "large.png")
    result = predictor.predict(tmp_path / "large.png")
    expected = predictor.predict_batch(RGB(large))[0]
    assert result.label == expected.label and result.class_name == ["red", "green", "blue"][result.label]
    np.testing.assert_allclose(result.probabilities, expected.probabilities, atol=1e-6)
    assert predictor.preprocess(tmp_path / "large.png").shape == (1, 3, 32, 32)


def test_an_arrays_only_export_refuses_pictures_but_takes_arrays(exports, tmp_path):
    predictor = Predictor(exports["arrays"])
    assert predictor.preprocessing == "none"
    with pytest.raises(ExportError, match=r"takes arrays only.*preprocessing=ImageInput\(mean=\(0.5, 0.5, 0.5\)"):
        predictor.predict(picture())
    arrays = RGB(picture())
    assert predictor.predict_batch(arrays)[0] == Predictor(exports["declared"]).predict_batch(arrays)[0]


def _cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [PYTHON, "-m", "paddle_mnist_hapi.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False, cwd=ROOT)


def _one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_serve_refuses_to_start_with_an_export_it_cannot_feed(exports, subprocess_env):
    pytest.importorskip("starlette", reason="the serve extra is not installed")
    proc = _cli(["serve", "--model", exports["arrays"], "--port", "0"], subprocess_env, timeout=120)
    _one_line_error(proc, "takes arrays only", "preprocessing=ImageInput(")
    assert "serving" not in proc.stdout  # never bound, never healthy


def test_cli_predict_and_evaluate_follow_the_metadata(exports, subprocess_env, tmp_path):
    (tmp_path / "blue").mkdir()
    Image.fromarray(picture(7)).save(tmp_path / "blue" / "a.png")
    Image.fromarray(picture(8)).save(tmp_path / "blue" / "b.png")
    files = [str(tmp_path / "blue" / "a.png"), str(tmp_path / "blue" / "b.png")]

    _one_line_error(_cli(["predict", "--model", exports["arrays"], *files], subprocess_env), "takes arrays only")
    _one_line_error(_cli(["predict", "--model", exports["declared"], "/no/such.png"], subprocess_env), "not found")
    done = _cli(["predict", "--model", exports["declared"], "--json", *files], subprocess_env)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)["predictions"]
    expected = Predictor(exports["declared"]).predict_many(files)
    assert [a["class_name"] for a in answers] == [p.class_name for p in expected]
    _one_line_error(
        _cli(["predict", "--model", exports["declared"], "--invert", "yes", *files], subprocess_env),
        "--invert is for MNIST digit models",
    )

    _one_line_error(_cli(["evaluate", exports["declared"]], subprocess_env), "only a digit model", "--images DIR")
    done = _cli(["evaluate", exports["declared"], "--images", str(tmp_path), "--json"], subprocess_env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["samples"] == 2
    assert result["accuracy"] == np.mean([p.class_name == "blue" for p in expected])
    _one_line_error(_cli(["evaluate", exports["arrays"], "--images", str(tmp_path)], subprocess_env), "arrays only")


def test_the_mnist_digit_models_keep_their_pipeline(tmp_path):
    export_model(paddle.Model(create_model("lenet5"), *specs_for("lenet5")), tmp_path / "lenet5")
    predictor = Predictor(tmp_path / "lenet5")
    assert predictor.preprocessing == "mnist_digits" and predictor.image_input is None
    stroke = np.zeros((60, 40), np.uint8)
    stroke[10:50, 18:22] = 255
    from paddle_mnist_hapi.deploy.preprocess import preprocess

    assert (predictor.preprocess(stroke) == preprocess(stroke)).all()


def test_an_export_of_the_release_before_is_read_by_its_input_not_its_mnist_description(exports, tmp_path):
    # the release before wrote MNIST's digit preprocessing, and no "kind", into every export's metadata
    import shutil

    for suffix in (".json", ".pdiparams", "_meta.json"):
        shutil.copy(exports["declared"] + suffix, tmp_path / f"old{suffix}")
    meta = json.loads((tmp_path / "old_meta.json").read_text())
    meta["preprocessing"] = {"grayscale": True, "size": [28, 28], "mean": 127.5, "std": 127.5}
    (tmp_path / "old_meta.json").write_text(json.dumps(meta))
    predictor = Predictor(tmp_path / "old")
    assert predictor.preprocessing == "none" and predictor.class_names == ["red", "green", "blue"]
    with pytest.raises(ExportError, match="takes arrays only"):  # not "Model input must hold whole images"
        predictor.predict(picture())
