"""The command line: every user mistake is one line on stderr and a non-zero exit, no traceback."""

import pickle

import torch
from PIL import Image

from edgemnv2.cli.main import run


def run_cli(capsys, *args):
    code = run([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, pattern):
    assert code == 2, err  # bad input or usage: exit 2 (1 is reserved for failed checks)
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert pattern in lines[0], lines[0]


def test_help_and_info(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and all(c in out for c in ("train", "eval", "info", "convert", "demo", "data"))
    code, out, _ = run_cli(capsys, "info", "mobilenet_v2")
    assert code == 0 and "3,504,872" in out
    code, out, _ = run_cli(capsys, "info", "centernet")
    assert code == 0 and "1x3x512x512" in out


def test_unknown_model(capsys):
    code, _, err = run_cli(capsys, "info", "mobilenet_v3")
    assert_one_line_error(code, err, "Did you mean 'mobilenet_v2'")


def test_unknown_data_difficulty(capsys, tmp_path):
    code, _, err = run_cli(capsys, "data", "shapes", "--out", tmp_path, "--difficulty", "gentel")
    assert_one_line_error(code, err, "Did you mean 'gentle'")
    assert not (tmp_path / "classification").exists()


def test_unknown_server_engine(capsys, trained_classifier, tmp_path):
    checkpoint, _ = trained_classifier
    code, _, err = run_cli(capsys, "convert", "--checkpoint", checkpoint, "--target", "torchscript", "--precision", "int8",
                           "--server-engine", "onedn", "--out", tmp_path / "a")
    assert_one_line_error(code, err, "Did you mean 'onednn'")


def test_server_engine_is_an_alias_of_the_torchscript_option_and_may_not_contradict_it(capsys, trained_classifier, tmp_path):
    checkpoint, _ = trained_classifier
    code, _, err = run_cli(capsys, "convert", "--checkpoint", checkpoint, "--target", "torchscript", "--precision", "int8",
                           "--server-engine", "onednn", "--set", "torchscript.engine=x86", "--out", tmp_path / "a")
    assert_one_line_error(code, err, "--server-engine onednn and --set torchscript.engine=x86 disagree")
    assert not (tmp_path / "a").exists()
    code, out, _ = run_cli(capsys, "convert", "--help")
    assert "Alias of --set torchscript.engine=VALUE" in " ".join(out.replace("│", " ").split())  # rich draws the help in a box


def test_missing_checkpoint(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", "--checkpoint", tmp_path / "nope.pt", "--data", tmp_path)
    assert_one_line_error(code, err, "checkpoint not found")


def test_unknown_target_and_precision(capsys, trained_classifier, tmp_path):
    checkpoint, _ = trained_classifier
    code, _, err = run_cli(capsys, "convert", "--checkpoint", checkpoint, "--out", tmp_path, "--target", "tflte")
    assert_one_line_error(code, err, "Did you mean 'tflite'")
    code, _, err = run_cli(capsys, "convert", "--checkpoint", checkpoint, "--out", tmp_path, "--target", "executorch", "--precision", "int8_weights")
    assert_one_line_error(code, err, "executorch: fp32, fp16, int8")


def test_int8_needs_real_calibration_images(capsys, trained_classifier, tmp_path):
    checkpoint, _ = trained_classifier
    code, _, err = run_cli(capsys, "convert", "--checkpoint", checkpoint, "--out", tmp_path, "--target", "tflite", "--precision", "int8")
    assert_one_line_error(code, err, "needs --calib-data")
    code, _, err = run_cli(capsys, "convert", "--checkpoint", checkpoint, "--out", tmp_path, "--target", "tflite", "--precision", "int8", "--calib-data", tmp_path, "--calib-size", "0")
    assert_one_line_error(code, err, "at least 1")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "convert", "--checkpoint", checkpoint, "--out", tmp_path, "--target", "tflite", "--precision", "int8", "--calib-data", tmp_path / "empty")
    assert_one_line_error(code, err, "no images found")
    assert not list(tmp_path.glob("*.tflite"))


def test_empty_and_single_class_datasets(capsys, tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "empty", "--out", tmp_path / "m.pt")
    assert_one_line_error(code, err, "no class sub-folders")
    for split in ("train", "val"):
        folder = tmp_path / "one" / split / "only"
        folder.mkdir(parents=True)
        Image.new("RGB", (16, 16)).save(folder / "a.png")
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "one", "--out", tmp_path / "m.pt", "--epochs", "1")
    assert_one_line_error(code, err, "at least 2 classes")
    assert not (tmp_path / "m.pt").exists()


def test_detector_input_must_be_a_multiple_of_32(capsys, shapes_root, tmp_path):
    code, _, err = run_cli(capsys, "train", "--arch", "centernet", "--data", shapes_root / "detection", "--out", tmp_path / "d.pt", "--input-size", "100")
    assert_one_line_error(code, err, "multiple of 32")


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_code_carrying_checkpoint_is_refused(capsys, tmp_path):
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"state_dict": Exploit()}, handle)
    code, out, err = run_cli(capsys, "eval", "--checkpoint", evil, "--data", tmp_path)
    assert_one_line_error(code, err, "refusing to load")
    assert "this must never run" not in out + err


def test_checkpoint_for_another_model(capsys, tmp_path, trained_classifier):
    checkpoint, _ = trained_classifier
    code, _, err = run_cli(capsys, "eval", "--checkpoint", checkpoint, "--data", tmp_path, "--arch", "centernet")
    assert_one_line_error(code, err, "holds a 'mobilenet_v2' model")
    raw = tmp_path / "raw.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), raw)
    code, _, err = run_cli(capsys, "eval", "--checkpoint", raw, "--data", tmp_path, "--arch", "mobilenet_v2_seed")
    assert_one_line_error(code, err, "does not look like")
    code, _, err = run_cli(capsys, "eval", "--checkpoint", raw, "--data", tmp_path)
    assert_one_line_error(code, err, "--arch")


def test_nan_weights_are_refused(capsys, tmp_path, trained_classifier):
    checkpoint, _ = trained_classifier
    payload = torch.load(checkpoint, weights_only=True)
    first = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][first] = payload["state_dict"][first].clone().fill_(float("nan"))
    broken = tmp_path / "nan.pt"
    torch.save(payload, broken)
    code, _, err = run_cli(capsys, "eval", "--checkpoint", broken, "--data", tmp_path)
    assert_one_line_error(code, err, "NaN/inf")


def test_bare_article_state_dict_loads_with_arch(tmp_path):
    from edgemnv2.checkpoint import load_checkpoint
    from tests.article_reference import MobileNetV2 as Article

    raw = tmp_path / "article.pth"
    torch.save(Article(num_classes=5).state_dict(), raw)
    model, meta = load_checkpoint(raw, arch="mobilenet_v2_seed")
    assert meta.num_classes == 5 and meta.preprocessing.input_size == (224, 224)


def test_torchrun_ranks_share_the_cores_instead_of_oversubscribing_them(monkeypatch, capsys):
    """Two local ranks at the default 2 threads on a 2-core machine would spin through each other's
    time slices: each gets 1, said once (by local rank 0); one process keeps what it asked for."""
    import torch

    from edgemnv2.cli import common
    from edgemnv2.cli.common import set_threads

    before = torch.get_num_threads()
    monkeypatch.setattr(common, "usable_cores", lambda: 2)
    try:
        assert set_threads(2) == 2 and capsys.readouterr().err == ""
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_RANK", "0")
        assert set_threads(2) == 1 and torch.get_num_threads() == 1
        assert "would oversubscribe this machine's 2 cores: 1 per rank" in capsys.readouterr().err
        monkeypatch.setenv("LOCAL_RANK", "1")
        assert set_threads(2) == 1 and capsys.readouterr().err == ""
        assert set_threads(1) == 1
    finally:
        torch.set_num_threads(before)
