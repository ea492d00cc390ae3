"""`benchmarks/decode.py --smoke`: runs end to end and writes well-formed JSON records."""

import importlib.util
import json
import pathlib

FIELDS = {"method", "tokens", "batch", "steps", "seconds_per_batch", "images_per_second", "device", "dtype",
          "compile_seconds"}


def _load_decode_benchmark():
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "decode.py"
    spec = importlib.util.spec_from_file_location("mgt_benchmark_decode", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decode_benchmark_smoke(tmp_path):
    out = tmp_path / "decode.json"
    returned = _load_decode_benchmark().main(["--smoke", "--max-batch", "2", "--json", str(out)])
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
