"""`dynaflip <verb>` error contract (dynaflip_ros/cli.py `main`): an error the user can fix
(`errors.UserError`, `configs.io.ConfigError`, `OSError`) is ONE line on stderr,
"dynaflip <verb>: <message>", exit 2; Ctrl-C exits 130; anything else keeps its traceback.
Every verb's --help ends with the same exit-code text (`cli.exit_codes_epilog`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dynaflip_ros import cli
from dynaflip_ros.errors import EXIT_INTERRUPTED, EXIT_USAGE, UserError

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/encoder_artifact.py


def one_line_error(capsys, verb: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"dynaflip {verb}: "), err
    assert "Traceback" not in err
    return lines[0]


def test_every_verb_documents_the_shared_exit_codes(capsys):
    text = cli.exit_codes_epilog()
    assert "exit codes:" in text and "  2  " in text and "130  interrupted" in text
    for verb in [v for v in cli.VERBS if v != "calibrate"] + ["calibrate hand-eye", "calibrate latency",
                                                             "calibrate intrinsics"]:
        with pytest.raises(SystemExit) as e:
            cli.main([*verb.split(), "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        if verb == "ur-loopback":
            continue  # sim/ur_loopback/cli.py: another package's adapter
        assert "exit codes:" in out and "2  bad flag, config, input file or model" in out, verb
        assert "130  interrupted" in out, verb


def test_missing_dataset_directory(tmp_path, capsys):
    rc = cli.main(["train-encoder", "--dataset", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
                   "--no-progress"])
    assert rc == EXIT_USAGE
    assert str(tmp_path / "none") in one_line_error(capsys, "train-encoder")
    rc = cli.main(["train-policy", "--dataset", str(tmp_path / "none"), "--encoder", str(tmp_path),
                   "--out", str(tmp_path / "o")])
    assert rc == EXIT_USAGE
    one_line_error(capsys, "train-policy")


def test_bad_config_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")  # an unknown key: ConfigError
    rc = cli.main(["train-encoder", "--dataset", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(bad)])
    assert rc == EXIT_USAGE
    assert "stepz" in one_line_error(capsys, "train-encoder")
    rc = cli.main(["export", "--encoder", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(bad)])
    assert rc == EXIT_USAGE
    one_line_error(capsys, "export")
    rc = cli.main(["train-policy", "--dataset", str(tmp_path), "--encoder", str(tmp_path), "--out",
                   str(tmp_path / "o"), "--config", str(tmp_path / "missing.yaml")])  # OSError
    assert rc == EXIT_USAGE
    assert "missing.yaml" in one_line_error(capsys, "train-policy")


def test_yaml_syntax_error(tmp_path, capsys):
    bad = tmp_path / "broken.yaml"
    bad.write_text("train: [steps: 3\n")
    rc = cli.main(["train-encoder", "--dataset", str(tmp_path), "--out", str(tmp_path / "o"),
                   "--config", str(bad)])
    assert rc == EXIT_USAGE
    assert "not valid YAML" in one_line_error(capsys, "train-encoder")


def test_launch_missing_params_file_and_model(tmp_path, capsys):
    rc = cli.main(["launch", "pick_into_sink", "--sim", "--params-file", str(tmp_path / "nope.yaml")])
    assert rc == EXIT_USAGE
    assert "nope.yaml" in one_line_error(capsys, "launch")
    rc = cli.main(["launch", "pick_into_sink", "--sim", "--encoder", str(tmp_path / "nope"), "--policy", str(tmp_path)])
    assert rc == EXIT_USAGE
    line = one_line_error(capsys, "launch")
    assert "encoder model not found" in line and "--encoder" in line


def test_fault_inject_usage_errors(capsys):
    assert cli.main(["fault-inject", "--commands", "0"]) == EXIT_USAGE
    assert "--commands" in one_line_error(capsys, "fault-inject")
    assert cli.main(["fault-inject", "--target", "sim", "--scenarios", "nope"]) == EXIT_USAGE
    assert "unknown scenario" in one_line_error(capsys, "fault-inject")


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from encoder_artifact import make_encoder_dir

    path = tmp_path_factory.mktemp("encoder")
    make_encoder_dir(path)
    return path


def test_truncated_onnx_file(encoder_dir, tmp_path, capsys):
    import shutil

    enc = tmp_path / "enc"
    shutil.copytree(encoder_dir, enc)
    (enc / "encoder.onnx").write_bytes(b"\x08\x07\x12\x04tor")  # the first bytes of a model, cut off
    rc = cli.main(["eval", "--sim", "--encoder", str(enc), "--policy", str(tmp_path), "--episodes", "1"])
    assert rc == EXIT_USAGE
    assert "encoder.onnx" in one_line_error(capsys, "eval")


def test_policy_trained_on_another_encoder(encoder_dir, tmp_path, capsys):
    from dynaflip_ros.policies.diffusion import FORMAT_VERSION, POLICY_JSON, POLICY_TYPE

    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / POLICY_JSON).write_text(json.dumps({
        "format_version": FORMAT_VERSION, "policy_type": POLICY_TYPE, "files_sha256": {},
        "encoder": {"weights_sha256": "0" * 64}}))
    rc = cli.main(["eval", "--sim", "--encoder", str(encoder_dir), "--policy", str(policy), "--backend", "torch",
                   "--episodes", "1"])
    assert rc == EXIT_USAGE
    assert "retrain the policy" in one_line_error(capsys, "eval")


def test_interrupt_and_bug(monkeypatch, capsys):
    from dynaflip_ros.eval import cli as eval_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_cli, "run", interrupted)
    assert cli.main(["eval", "--sim", "--encoder", "e", "--policy", "p"]) == EXIT_INTERRUPTED
    assert one_line_error(capsys, "eval") == "dynaflip eval: interrupted"

    def bug(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(eval_cli, "run", bug)
    with pytest.raises(ZeroDivisionError):  # no one-line message: the traceback is kept (exit 1)
        cli.main(["eval", "--sim", "--encoder", "e", "--policy", "p"])

    def user_error(args):
        raise UserError("first line\nsecond line")

    monkeypatch.setattr(eval_cli, "run", user_error)
    assert cli.main(["eval", "--sim", "--encoder", "e", "--policy", "p"]) == EXIT_USAGE
    assert one_line_error(capsys, "eval") == "dynaflip eval: first line; second line"
