"""tools/variant_table.py: rows come from results.json and train.log, never typed."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("variant_table", ROOT / "tools" / "variant_table.py")
variant_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(variant_table)


def write_exp(exp: Path, split: str, results: dict, log: str = "") -> Path:
    (exp / f"eval_{split}").mkdir(parents=True, exist_ok=True)
    (exp / f"eval_{split}" / "results.json").write_text(json.dumps(results))
    if log:
        (exp / "train.log").write_text(log)
    return exp


def test_rows_of_a_cif_model_and_of_a_parallel_model(tmp_path, capsys):
    recall = {"r1": 0.41, "r5": 0.9, "r10": 0.99}
    hybrid = write_exp(tmp_path / "hybrid", "test", {
        "retrieval_branch": "fused", "speech_to_image": recall, "clip_text_to_image": {"r1": 0.5},
        "branches": {"parallel": {"speech_to_image": {"r1": 0.3}}, "fused": {"speech_to_image": recall}},
        "bootstrap_ci95": {"speech_to_image_r1": [0.364, 0.462]},
        "keyword": {"f1": 0.643}, "cif_boundary": {"f1": 0.269}, "cif_boundary_chance": {"f1": 0.285}},
        log="...\n# Accounting: time=404 threads=1\n")
    write_exp(hybrid, "dev", {"speech_to_image": {"r1": 0.483}})
    parallel = write_exp(tmp_path / "parallel", "test", {
        "retrieval_branch": "parallel", "speech_to_image": {"r1": 0.25}, "clip_text_to_image": {"r1": 0.5},
        "branches": {"parallel": {"speech_to_image": {"r1": 0.25}}}})
    variant_table.main([str(hybrid), str(parallel)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[2] == ("|`hybrid`|fused|41.0 (36.4-46.2)|0.82 ×|parallel 30.0, fused 41.0|48.3|64.3|"
                        "26.9 (28.5)|404 s|")
    assert lines[3] == "|`parallel`|parallel|25.0|0.50 ×|parallel 25.0|-|-|-|-|"
