import torch

from digitlab.metrics import classification_report, confusion_matrix, per_class


def test_confusion_matrix_counts_true_rows_pred_columns():
    preds = torch.tensor([0, 1, 1, 2, 2, 2])
    labels = torch.tensor([0, 1, 2, 2, 2, 0])
    cm = confusion_matrix(preds, labels, 3)
    assert cm.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 2]]


def test_per_class_precision_recall_f1():
    cm = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 1, 2]])
    rows = per_class(cm, ["a", "b", "c"])
    assert rows[0] == {"class": "a", "precision": 1.0, "recall": 0.5, "f1": round(2 / 3, 6), "support": 2}
    assert rows[1]["precision"] == 0.5 and rows[1]["recall"] == 1.0
    assert rows[2]["precision"] == round(2 / 3, 6) and rows[2]["recall"] == round(2 / 3, 6)


def test_class_never_predicted_has_zero_precision_not_nan():
    cm = torch.tensor([[2, 0], [1, 0]])
    rows = per_class(cm, ["0", "1"])
    assert rows[1]["precision"] == 0.0 and rows[1]["f1"] == 0.0


def test_classification_report_accuracy_and_loss():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    rep = classification_report(logits, torch.tensor([0, 1, 1]), ["0", "1"])
    assert rep["accuracy"] == 2 / 3 and rep["errors"] == 1 and rep["n"] == 3
    assert 1.6 < rep["loss"] < 1.8
