"""The `outlier-lab` command: JSON contracts on stdout, clear errors, a light --help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.cli.main import main
from tests.conftest import PROSE


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_does_not_import_torch() -> None:
    probe = "import sys; from app.cli.main import build_parser; build_parser(); print(sorted(m for m in ('torch', 'transformer_lens', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_scan_json_contract_on_the_tiny_model(capsys) -> None:
    code, out, _ = run_cli(capsys, "scan", "--model", "tiny-random", "--text", "abc", "--json", "--top-k", "2")
    assert code == 0
    payload = json.loads(out)
    assert set(payload) == {"tokens", "layers", "massive", "sink_share"}
    assert payload["tokens"] == ["<bos>", "a", "b", "c"]
    assert len(payload["layers"]) == len(payload["sink_share"]) == 4
    layer = payload["layers"][0]
    assert set(layer) == {"layer", "median_abs", "max_abs", "top"}
    assert [set(t) for t in layer["top"]] == [{"position", "dim", "value", "token"}] * 2
    assert abs(layer["top"][0]["value"]) == layer["max_abs"]


def test_scan_without_bos_and_the_readable_table(capsys) -> None:
    code, out, _ = run_cli(capsys, "scan", "--model", "tiny-random", "--text", "abc", "--no-bos", "--json")
    assert code == 0 and json.loads(out)["tokens"] == ["a", "b", "c"]
    code, out, _ = run_cli(capsys, "scan", "--model", "tiny-random", "--text", "abc")
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["layer", "median|x|", "max|x|"]
    assert "no massive activations" in out


@pytest.mark.parametrize(
    "argv,named",
    [
        (["scan", "--model", "tiny-random", "--text", "abc", "--top-k", "0"], "--top-k"),
        (["scan", "--model", "tiny-random", "--text", "abc", "--site", "nowhere"], "--site"),
        (["scan", "--model", "tiny-random", "--text", "abc", "--median-ratio", "-3"], "--median-ratio"),
        (["scan", "--model", "no-such-model", "--text", "abc"], "--model"),
        (["scan", "--model", "tiny-random", "--text", "abc", "--dtype", "float8"], "--dtype"),
        (["origin", "--model", "tiny-random", "--text", "abc", "--at", "9:0:0"], "--at"),
        (["origin", "--model", "tiny-random", "--text", "abc", "--at", "1:7:0"], "--at"),
    ],
)
def test_bad_input_exits_2_naming_the_option(capsys, argv: list[str], named: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert named in err.splitlines()[-1]


def test_malformed_coordinate_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["origin", "--model", "tiny-random", "--text", "abc", "--at", "11:0"])
    assert exit_info.value.code == 2
    assert "LAYER:POS:DIM" in capsys.readouterr().err


@pytest.mark.real
def test_origin_json_on_the_default_model(capsys) -> None:
    code, out, _ = run_cli(capsys, "origin", "--text", PROSE, "--at", "11:0:507", "--top-k", "3", "--json")
    assert code == 0
    payload = json.loads(out)
    assert set(payload["parts"]) == {"resid_pre", "attn_out", "mlp_out"}
    neurons = payload["neurons"]
    assert [n["neuron"] for n in neurons[:2]] in ([1229, 1487], [1487, 1229])
    magnitudes = [abs(n["contribution"]) for n in neurons]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert all(n["contribution"] == pytest.approx(n["activation"] * n["weight"], rel=1e-4) for n in neurons)
