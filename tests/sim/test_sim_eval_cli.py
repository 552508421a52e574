"""`edge-agent sim eval`: paired comparisons with bootstrap intervals, bad episode counts, plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.cli.main import main
from agent.cli.sim_cmd import report_lines
from sim.compare import compare, f1_of_counts, mean_of, paired_difference

PAIRS = {"int8_tflite_vs_float", "int8_onnx_vs_float", "float_vs_baseline"}


@pytest.fixture(scope="module")
def smart_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One quick two-episode evaluation through the CLI, with plots (about 4 s of CPU)."""
    plots = tmp_path_factory.mktemp("plots")
    capture = tmp_path_factory.mktemp("out") / "stdout.json"
    import contextlib

    with open(capture, "w") as out, contextlib.redirect_stdout(out):
        argv = ["sim", "eval", "smart_home", "--quick", "--episodes", "2", "--json"]
        assert main([*argv, "--plot", str(plots)]) == 0
    return json.loads(capture.read_text()), plots


def test_json_compares_every_pair_beside_results(smart_home: tuple[dict[str, Any], Path]) -> None:
    result, _ = smart_home
    assert set(result["compare"]) == PAIRS
    for c in result["compare"].values():
        lo, hi = c["ci95"]
        assert lo <= c["mean_diff"] <= hi
        assert c["metric"] == "comfort_violation_kh_per_day" and c["episodes"] == 2
        assert c["verdict"] in {
            "no detectable difference",
            *(f"{a} {w} than {b}" for a, b in (("int8_tflite", "float"), ("int8_onnx", "float"),
              ("float", "baseline")) for w in ("better", "worse")),
        }  # fmt: skip
    # Signed so that positive means better: lower violation is better in this domain.
    per = result["extra"]["per_episode"]
    expected = np.mean(per["baseline"]) - np.mean(per["float"])
    assert result["compare"]["float_vs_baseline"]["mean_diff"] == pytest.approx(expected, abs=1e-3)


def test_text_report_names_intervals_and_plot_files(
    smart_home: tuple[dict[str, Any], Path],
) -> None:
    result, plots = smart_home
    text = "\n".join(report_lines(result))
    assert "95 % bootstrap interval" in text and "float_vs_baseline" in text
    written = sorted(p.name for p in plots.iterdir())
    assert len(written) == 4
    assert all(str(plots / name) in text for name in written)


@pytest.mark.parametrize("bad", ["0", "-3", "two"])
def test_bad_episode_counts_are_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sim", "eval", "energy", "--episodes", bad])
    assert exc.value.code == 2
    assert "--episodes" in capsys.readouterr().err


def test_a_clear_difference_gets_a_direction_and_noise_does_not() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(1.0, 0.1, 40)
    better = mean_of(base - 0.5)  # lower is better: 0.5 less everywhere
    same = mean_of(base + rng.normal(0.0, 0.01, 40))
    seeds = {v: list(range(40)) for v in ("float", "baseline", "int8_tflite")}
    out = compare(
        {"float": better, "baseline": mean_of(base), "int8_tflite": same},
        seeds,
        metric="m",
        higher_is_better=False,
    )
    assert out["float_vs_baseline"]["verdict"] == "float better than baseline"
    assert out["float_vs_baseline"]["mean_diff"] == pytest.approx(0.5)
    assert out["int8_tflite_vs_float"]["verdict"] == "int8_tflite worse than float"
    assert "int8_onnx_vs_float" not in out  # that variant did not run
    diff, (lo, hi) = paired_difference(same, mean_of(base), 40, higher_is_better=False)
    assert lo < 0.0 < hi and abs(diff) < 0.01


def test_unpaired_episodes_are_refused() -> None:
    stat = mean_of([1.0, 0.0])
    with pytest.raises(ValueError, match="different episodes"):
        compare(
            {"float": stat, "baseline": stat},
            {"float": [10_000, 10_001], "baseline": [10_001, 10_002]},
            metric="m",
            higher_is_better=True,
        )


def test_one_episode_is_too_few_to_tell() -> None:
    stat = mean_of([1.0])
    out = compare(
        {"float": stat, "baseline": mean_of([0.0])},
        {"float": [1], "baseline": [1]},
        metric="m",
        higher_is_better=True,
    )
    assert out["float_vs_baseline"]["verdict"] == "too few episodes (1) to tell"


def test_pooled_f1_is_resampled_from_counts() -> None:
    f1 = f1_of_counts([3, 2], [1, 0], [4, 2])
    assert f1(np.arange(2)[None, :])[0] == pytest.approx(5 / 6)
    assert f1(np.array([[1, 1]]))[0] == pytest.approx(1.0)
