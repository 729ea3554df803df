"""The no-reference report scores a tiny folder of input and restored frames and writes its JSON."""

import json

import numpy as np
import pytest
from scipy import ndimage
from skimage import data, io

from experiments.configs import noref as noref_config
from turbjax.metrics import noref
from turbjax.metrics.noref_report import noref_report, read_frame


def _frames(tmp_path):
    """input/: two clips of frames (8-bit RGB twice, 16-bit gray); restored/: the same names, sharper."""
    sharp = [data.astronaut()[100:228, 150:278], data.chelsea()[50:178, 100:228], data.camera()[200:328, 200:328]]
    names = ["clip_a/000.png", "clip_a/001.png", "clip_b/000.png"]
    for root, sigma in (("input", 2.0), ("restored", 0.0)):
        for name, image in zip(names, sharp, strict=True):
            path = tmp_path / root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            blur = (sigma, sigma) + (0,) * (image.ndim - 2)
            out = ndimage.gaussian_filter(image.astype(np.float64), blur) if sigma else image.astype(np.float64)
            if name == "clip_b/000.png":  # a 16-bit gray file
                io.imsave(path, np.round(out * 257).astype(np.uint16), check_contrast=False)
            else:
                io.imsave(path, np.round(out).astype(np.uint8), check_contrast=False)
    return names


def test_report_on_a_tiny_folder(tmp_path):
    names = _frames(tmp_path)
    config = noref_config.get_config("tiny")
    config.input_dir = str(tmp_path / "input")
    config.restored_dir = str(tmp_path / "restored")
    report = noref_report(config, tmp_path / "work")

    saved = json.loads((tmp_path / "work" / "noref.json").read_text())
    assert not list((tmp_path / "work").glob(".*.tmp"))  # written atomically
    assert set(saved["summary"]) == {"input", "restored"}
    assert [row["name"] for row in saved["frames"]["input"]] == names
    assert [row["name"] for row in saved["frames"]["restored"]] == names
    frame = read_frame(tmp_path / "restored" / names[2])
    assert frame.shape == (128, 128) and frame.dtype == np.float64  # gray stays gray, native size
    np.testing.assert_allclose(frame, data.camera()[200:328, 200:328] / 255.0)  # 16-bit scaled by 65535
    assert saved["frames"]["restored"][2]["niqe"] == pytest.approx(noref.niqe(frame))
    assert read_frame(tmp_path / "restored" / names[1]).shape == (128, 128, 3)
    for method in ("input", "restored"):
        summary = saved["summary"][method]
        assert summary["num_frames"] == 3 and summary["niqe_seconds_per_frame"] > 0
    # The 2 px blur of the input frames is worse than the sharp "restored" ones by both measures.
    assert saved["summary"]["input"]["niqe_mean"] > saved["summary"]["restored"]["niqe_mean"]
    assert saved["summary"]["input"]["brisque_mean"] > saved["summary"]["restored"]["brisque_mean"]
    lines = report["table"].splitlines()
    assert lines[0].split() == ["Method", "Frames", "NIQE", "BRISQUE"]
    assert lines[1].startswith("input") and lines[2].startswith("restored")

    config.max_frames = 1
    config.recursive = False  # clips live in sub-folders: nothing at the top level
    with pytest.raises(ValueError, match="holds no images"):
        noref_report(config, tmp_path / "work")


def test_report_errors_name_what_is_wrong(tmp_path):
    _frames(tmp_path)
    (tmp_path / "restored" / "clip_b" / "000.png").unlink()
    config = noref_config.get_config("tiny")
    config.input_dir = str(tmp_path / "input")
    config.restored_dir = str(tmp_path / "restored")
    with pytest.raises(ValueError, match=r"lacks 1 of the 3 input frames .*clip_b/000.png"):
        noref_report(config, tmp_path / "work")
    config.input_dir = None
    with pytest.raises(ValueError, match="restored_dir needs input_dir"):
        noref_report(config, tmp_path / "work")
    small = tmp_path / "small"
    small.mkdir()
    io.imsave(small / "x.png", data.camera()[:64, :64], check_contrast=False)
    config = noref_config.get_config("tiny")
    config.input_dir = str(small)
    with pytest.raises(ValueError, match=r"frame 'x.png': image must be at least 96x96"):
        noref_report(config, tmp_path / "work")
