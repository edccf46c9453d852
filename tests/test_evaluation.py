import json

from PIL import Image

from digitlab.evaluation import evaluate


def test_evaluate_writes_metrics_and_report(small_model_dir):
    m = evaluate(small_model_dir, "mnist")
    assert 0.85 < m["test"]["accuracy"] <= 1 and m["test"]["n"] == 10000
    assert len(m["per_class"]) == 10 and sum(r["support"] for r in m["per_class"]) == 10000
    cm = m["confusion_matrix"]
    assert sum(map(sum, cm)) == 10000
    assert sum(cm[i][i] for i in range(10)) == 10000 - m["test"]["errors"]
    saved = json.loads((small_model_dir / "metrics.json").read_text())
    assert saved["test"]["accuracy"] == m["test"]["accuracy"] and "loss" in saved["test"]
    for name in ("confusion_matrix.png", "curves.png", "samples.png", "errors.png"):
        with Image.open(small_model_dir / name) as im:
            assert im.size[0] > 300 and im.size[1] > 100
    report = (small_model_dir / "report.md").read_text()
    assert "confusion_matrix.png" in report and "errors.png" in report and "| 9 |" in report


def test_evaluate_with_tta_is_close(small_model_dir):
    a = evaluate(small_model_dir, "mnist", write=False)["test"]["accuracy"]
    b = evaluate(small_model_dir, "mnist", tta=True, write=False)["test"]["accuracy"]
    assert abs(a - b) < 0.03
