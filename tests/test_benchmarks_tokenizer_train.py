"""`benchmarks/tokenizer.py --smoke` and `benchmarks/train.py --smoke`: end to end, well-formed JSON records."""

import importlib.util
import json
import math
import pathlib

FIELDS = {"benchmark", "metric", "value", "unit", "device", "dtype", "batch"}


def _load(name):
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"mgt_benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name, argv, tmp_path):
    out = tmp_path / f"{name}.json"
    returned = _load(name).main(["--smoke", "--json", str(out)] + argv)
    records = json.loads(out.read_text())
    assert records == json.loads(json.dumps(returned))
    for rec in records:
        assert FIELDS <= set(rec), FIELDS - set(rec)
    return {(r["benchmark"], r["metric"], r.get("remat")): r for r in records}


def _finite_positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_tokenizer_benchmark_smoke(tmp_path):
    recs = _run("tokenizer", [], tmp_path)
    q = {metric: r for (bench, metric, _), r in recs.items() if bench == "tokenizer/quality"}
    t = {metric: r for (bench, metric, _), r in recs.items() if bench == "tokenizer/throughput"}
    assert {"psnr", "mse", "codebook_usage", "perplexity", "train_seconds"} <= set(q)
    for r in q.values():
        assert _finite_positive(r["value"]), r
    assert q["psnr"]["unit"] == "dB" and q["psnr"]["test_images"] == 180 and q["psnr"]["train_steps"] == 6
    # PSNR and MSE describe the same reconstructions: the mean of per-image PSNRs >= the PSNR of the mean
    # MSE (Jensen), and equal only when every image has the same error
    assert q["psnr"]["value"] >= 10 * math.log10(1 / q["mse"]["value"]) - 1e-6
    assert 0 < q["codebook_usage"]["value"] <= 1
    assert 1 <= q["perplexity"]["value"] <= q["perplexity"]["codebook_size"] + 1e-6
    for part in ("encode", "decode"):
        ips, spb = t[f"{part}_images_per_second"], t[f"{part}_seconds_per_batch"]
        assert _finite_positive(ips["value"]) and _finite_positive(spb["value"])
        assert ips["batch"] == 2 and ips["image_size"] == 32 and ips["dtype"] == "float32"
        assert math.isclose(ips["value"], ips["batch"] / spb["value"], rel_tol=1e-9)
        assert t[f"{part}_compile_seconds"]["value"] > 0 and t[f"{part}_first_call_seconds"]["value"] > 0


def test_train_benchmark_smoke(tmp_path):
    recs = _run("train", ["--peak-flops", "1e12"], tmp_path)
    tr = {metric: r for (bench, metric, remat), r in recs.items() if bench == "train/transformer" and remat is False}
    tok = {metric: r for (bench, metric, _), r in recs.items() if bench == "train/tokenizer"}
    for group, rate in ((tr, "tokens_per_second"), (tok, "images_per_second")):
        for metric in ("steps_per_second", rate, "seconds_per_step", "model_flops_per_step", "mfu", "final_loss"):
            assert _finite_positive(group[metric]["value"]), group[metric]
        assert group["compile_seconds"]["value"] >= 0
        assert group["steps_per_second"]["batch"] == 2 and group["mfu"]["peak_flops"] == 1e12
        sps = group["steps_per_second"]["value"]
        assert math.isclose(group["mfu"]["value"], group["model_flops_per_step"]["value"] * sps / 1e12, rel_tol=1e-9)
    assert math.isclose(tr["tokens_per_second"]["value"], tr["steps_per_second"]["value"] * 2 * 5, rel_tol=1e-9)
    # XLA counts the matmuls and attention (and elementwise work and the optimiser on top of them)
    analytic = tr["analytic_flops_per_step"]["value"]
    assert analytic <= tr["model_flops_per_step"]["value"] <= 3 * analytic


def test_breakdown_benchmark_smoke(tmp_path):
    """`benchmarks/breakdown.py --smoke`: both cases attribute their time to the model's parts."""
    module = _load("breakdown")
    for case, expected in (("generation", {"transformer/layers/attention", "transformer/layers/mlp", "sampling",
                                           "vqgan_decoder"}),
                           ("train", {"transformer/layers/attention", "transformer/layers/attention [backward]",
                                      "loss", "optimizer", "ema"})):
        out = tmp_path / f"{case}.json"
        returned = module.main(["--smoke", "--case", case, "--json", str(out), "--trace-dir", str(tmp_path / case)])
        records = json.loads(out.read_text())
        assert records == json.loads(json.dumps(returned))
        by_scope = {r["scope"]: r for r in records}
        assert expected <= set(by_scope), expected - set(by_scope)
        total = by_scope["(all ops)"]["seconds_per_call"]
        assert _finite_positive(total) and _finite_positive(by_scope["(wall)"]["seconds_per_call"])
        parts = [r["seconds_per_call"] for r in records if not r["scope"].startswith("(all") and r["scope"] != "(wall)"]
        assert math.isclose(sum(parts), total, rel_tol=1e-6)
        assert all(r["case"] == case and r["batch"] == 2 and r["device"] for r in records)
        rec = records[0]
        assert _finite_positive(rec["model_flops_per_call"]) and rec["mfu"] is None  # CPU: no peak known
        assert math.isclose(rec["achieved_flops_per_second"], rec["model_flops_per_call"] / rec["wall_seconds"],
                            rel_tol=1e-9)
