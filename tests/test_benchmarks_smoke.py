"""`benchmarks/decode.py --smoke` and `benchmarks/official.py --smoke`: run end to end and write
well-formed JSON records."""

import importlib.util
import json
import pathlib

import pytest

FIELDS = {"method", "tokens", "batch", "steps", "seconds_per_batch", "images_per_second", "device", "dtype",
          "compile_seconds"}


def _load_benchmark(name: str = "decode"):
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"mgt_benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decode_benchmark_smoke(tmp_path):
    out = tmp_path / "decode.json"
    returned = _load_benchmark().main(["--smoke", "--max-batch", "2", "--json", str(out)])
    records = json.loads(out.read_text())
    assert records == json.loads(json.dumps(returned))
    for rec in records:
        assert FIELDS <= set(rec), FIELDS - set(rec)
        assert rec["tokens"] == 16 and rec["batch"] == (2 if rec["largest_batch"] else 1)
        assert rec["dtype"] == "float32"
        assert rec["seconds_per_batch"] > 0 and rec["compile_seconds"] >= 0
        assert abs(rec["images_per_second"] - rec["batch"] / rec["seconds_per_batch"]) < 1e-6 * rec["images_per_second"]
    methods = {(r["method"], r["steps"]) for r in records}
    assert {("maskgit", 8), ("ar", 16)} <= methods
    assert {"vqgan_decode", "maskgit+vqgan", "ar+vqgan"} <= {m for m, _ in methods}
    largest = [r for r in records if r["largest_batch"]]
    assert len(largest) == 1 and largest[0]["method"] == "maskgit" and largest[0]["batch"] == 2


def test_official_comparison_benchmark_smoke(tmp_path):
    """Without a checkout of the official code only mgt's methods run (the comparison itself needs
    `--official`, which CI cannot have); a wrong checkout path is a one-line error."""
    bench = _load_benchmark("official")
    out = tmp_path / "official.json"
    records = bench.main(["--smoke", "--methods", "mgt", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(records))
    assert [r["method"] for r in records] == ["mgt"]
    for rec in records:
        assert rec["seconds_per_batch"] > 0 and rec["steps"] == 8 and rec["batch"] == 1
        assert rec["speedup_vs_official_rejit"] is None and rec["model"] == "smoke"
    with pytest.raises(SystemExit):
        bench.parse_args(["--official", str(tmp_path)])
