"""tools/report.py: REPORT.md's every table read back against the runs' own files, the models' names, the grading
helpers and the command lines."""
import json
import os
import re
import shutil
import sys

import numpy as np
import pytest

from tools.report import GENERATED_NOTE, REAL_NOTE, describe_model, grade_p1, write_report
from tools.report import main as report_main
from tools.report_fields import FIGURES_MARKER


def test_describe_model_names_architecture_encoder_and_initialisation():
    assert describe_model({"arch": "deeplabv3", "encoder": "resnet101", "output_stride": 8, "aux_loss": True,
                           "backbone_weights": "coco"}) == "DeepLabV3-ResNet101 (COCO init, output stride 8)"
    # a config written before encoder/output_stride existed: the ResNet-50 at output stride 16 it rebuilds
    assert describe_model({"arch": "deeplabv3", "backbone": "resnet50", "aux_loss": True,
                           "backbone_weights": "imagenet"}) == "DeepLabV3-ResNet50 (ImageNet, output stride 16)"
    assert describe_model({"arch": "deeplabv3plus", "encoder": "resnet101", "output_stride": 16, "aux_loss": False,
                           "backbone_weights": "coco"}) == \
        "DeepLabV3+-ResNet101 (COCO init of backbone + ASPP, output stride 16, no aux head)"
    assert describe_model({"arch": "unet", "encoder": "resnet34", "drop_skip": [0],
                           "backbone_weights": "imagenet"}) == \
        "U-Net (ResNet-34 encoder, ImageNet, skip 0 (shallowest) dropped)"
    assert describe_model({"arch": "unet", "base_width": 64, "depth": 4, "drop_skip": [0, 1]}) == \
        "U-Net (from scratch, width 64, depth 4, skips 0 (shallowest), 1 dropped)"
    assert describe_model({"arch": "unet", "base_width": 64, "depth": 4, "drop_skip": [3],
                           "drop_skip_random": {"seed": 7, "chosen": 3}}) == \
        "U-Net (from scratch, width 64, depth 4, skip 3 (deepest) dropped, chosen at random (seed 7))"
    assert describe_model({"arch": "deeplabv3", "encoder": "resnet50", "output_stride": 8,
                           "backbone_weights": "/w/my_coco.pth"}) == \
        "DeepLabV3-ResNet50 (init from my_coco.pth, output stride 8)"
    assert describe_model({"arch": "fcn32s", "backbone_weights": "none"}) == "VGG16-FCN32s (random init)"


def _run(folder, config, miou):
    folder.mkdir(parents=True)
    folder.joinpath("results.json").write_text(json.dumps({
        "arch": config["arch"], "best_miou": miou, "best_iou": [miou] * 6, "best_epoch": 3, "model_config": config}))


def test_report_tables_name_the_models_and_list_further_runs(tmp_path):
    runs = tmp_path / "runs"
    _run(runs / "p2_unet", {"arch": "unet", "base_width": 64, "depth": 4, "drop_skip": []}, 0.6101)
    _run(runs / "p2_deeplab", {"arch": "deeplabv3", "encoder": "resnet101", "output_stride": 8,
                               "backbone_weights": "coco"}, 0.7336)
    _run(runs / "p2_unet_r34", {"arch": "unet", "encoder": "resnet34", "drop_skip": [],
                                "backbone_weights": "imagenet"}, 0.6970)
    _run(runs / "p2_deeplabv3plus", {"arch": "deeplabv3plus", "encoder": "resnet101", "output_stride": 16,
                                     "backbone_weights": "coco"}, 0.7610)
    (runs / "p2_sam").mkdir()  # not a segmentation run: no results.json, not listed
    text = write_report(runs, tmp_path / "report").read_text()
    assert "| Model A: U-Net (from scratch, width 64, depth 4) | 0.6101 |" in text
    assert "| Model B: DeepLabV3-ResNet101 (COCO init, output stride 8) | 0.7336 |" in text
    further = text.split("### Further models")[1].split("###")[0]
    assert "| p2_unet_r34: U-Net (ResNet-34 encoder, ImageNet) | 0.6970 |" in further
    assert "| p2_deeplabv3plus: DeepLabV3+-ResNet101 (COCO init of backbone + ASPP, output stride 16) | 0.7610 |" \
        in further
    assert "p2_sam" not in further and "Model B" not in further


def test_a_results_json_that_is_a_list_is_a_one_line_error_naming_it(tmp_path, repo_root):
    """Before: `python -m tools.report RUNS` with a results.json holding a JSON list ended in a traceback."""
    import subprocess
    import sys

    runs = tmp_path / "runs"
    (runs / "p1_A").mkdir(parents=True)
    (runs / "p1_A" / "results.json").write_text(json.dumps([{"setting": "A", "best_val_acc": 0.5}]))
    proc = subprocess.run([sys.executable, "-m", "tools.report", str(runs), "-o", str(tmp_path / "report")],
                          cwd=str(repo_root), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr == "error: {} holds a JSON list, not the object (dict) a run writes\n".format(
        runs / "p1_A" / "results.json")


def _table(text, first_header):
    """The markdown table whose header row starts with ``first_header``: a list of {column: cell} rows."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| " + first_header + " |"))
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
    header, rows = cells(lines[start]), []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, cells(line))))
    return rows


def test_dino_row_matches_its_results_json_column_by_column(tmp_path):
    runs = tmp_path / "runs"
    (runs / "p1_dino").mkdir(parents=True)
    (runs / "p1_dino" / "results.json").write_text(json.dumps({
        "arch": "resnet34", "epochs": 77, "world_size": 3, "final_loss": 5.4321, "initial_knn_acc": 0.1234,
        "final_knn_acc": 0.8765}))
    # the teacher's entropy of the last epoch (not the first) beside ln(out_dim), ln(1000) = 6.908
    (runs / "p1_dino" / "args.json").write_text(json.dumps({"out_dim": 1000}))
    (runs / "p1_dino" / "log.jsonl").write_text(json.dumps({"epoch": 1, "teacher_entropy": 5.5}) + "\n"
                                               + json.dumps({"epoch": 2, "teacher_entropy": 3.21}) + "\n")
    rows = _table(write_report(runs, tmp_path / "report").read_text(), "Run")
    assert rows == [{"Run": "p1_dino: ours, on the unlabeled mini set; settings C, E", "Backbone": "resnet34", "Epochs": "77", "Processes": "3", "Final loss": "5.4321",
                     "k-NN at init": "0.1234", "k-NN at the end": "0.8765", "Teacher entropy at the end": "3.210", "ln(out_dim)": "6.908"}]


def _json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _section(text, title):
    """The text under ``### title`` up to the next heading."""
    body = text.split("### " + title + "\n", 1)[1]
    return re.split(r"\n##+ ", body, 1)[0]


@pytest.fixture
def runs(tmp_path):
    """Every run folder the report reads, hand-made with distinct values; generated data (the toydata marker) for
    DINO, t-SNE, the U-Net and the graded outputs, "real" data for settings A-E."""
    from tools.toydata import GENERATED_MARKER

    toy, real, runs = tmp_path / "toy", tmp_path / "real", tmp_path / "runs"
    (toy / "p2_data" / "validation").mkdir(parents=True)
    (toy / GENERATED_MARKER).write_text("generated")
    (real / "office").mkdir(parents=True)
    (real / "office" / "val.csv").write_text("id,filename,label\n" + "".join(
        "{},{}.jpg,{}\n".format(i, i, label) for i, label in enumerate([2, 2, 2, 0, 1])))  # chance 3/5
    (toy / "p1.csv").write_text("id,filename,label\n0,a.jpg,1\n")
    # validation masks: 6 urban + 2 agriculture pixels (and 2 red, ignored): best constant = all urban,
    # IoU urban 6/8 and agriculture 0, so mIoU 0.375
    from utils.masks import write_mask
    from PIL import Image
    write_mask(toy / "p2_data" / "validation" / "0000_mask.png", np.zeros((2, 2), dtype=np.uint8))
    Image.fromarray(np.array([[[0, 255, 255], [0, 255, 255], [255, 255, 0]], [[255, 255, 0], [255, 0, 0],
                                                                          [255, 0, 0]]], dtype=np.uint8)).save(
        str(toy / "p2_data" / "validation" / "0001_mask.png"))
    for name in ("0000_sat.jpg", "0001_sat.jpg"):
        (toy / "p2_data" / "validation" / name).write_bytes(b"")
    _json(runs / "p1_dino" / "results.json", {"arch": "resnet50", "epochs": 300, "world_size": 4,
                                              "final_loss": 2.3456, "initial_knn_acc": 0.1212, "final_knn_acc": 0.4848})
    _json(runs / "p1_dino" / "args.json", {"data_dir": str(toy / "p1_data" / "mini" / "train")})
    for setting, best, last in (("C", 0.5345, 0.5001), ("A", 0.1872, 0.1500)):
        _json(runs / ("p1_" + setting) / "results.json", {"setting": setting, "pretraining": "pre " + setting,
                                                          "finetuning": "fine " + setting, "best_val_acc": best,
                                                          "last_val_acc": last})
        _json(runs / ("p1_" + setting) / "args.json", {"data_dir": str(real / "office")})
    _json(runs / "p1_tsne" / "tsne_metrics.json", {"csv": str(toy / "p1.csv"), "num_images": 12, "checkpoints": [
        {"name": "first", "setting": "C", "epoch": 1, "silhouette": 0.0123, "silhouette_2d": 0.0456, "knn_acc": 1},
        {"name": "last", "silhouette": 0.3123, "silhouette_2d": 0.3456, "knn_acc": 0.8}]})
    unet = {"arch": "unet", "base_width": 8, "depth": 3, "drop_skip": []}
    _json(runs / "p2_unet" / "results.json", {"best_miou": 0.6101, "best_epoch": 7, "model_config": unet,
                                              "best_iou": [0.61, 0.62, 0.63, 0.64, 0.65, 0.5306]})
    _json(runs / "p2_unet" / "args.json", {"data_dir": str(toy / "p2_data")})
    _json(runs / "p2_unet_drop_skip" / "results.json", {"best_miou": 0.2101, "best_epoch": 5,
                                                     "model_config": dict(unet, drop_skip=[0]),
                                                     "last_iou": [0.21, 0.22, 0.23]})
    _json(runs / "p2_deeplab" / "results.json", {"best_miou": 0.7336, "best_epoch": 9, "best_iou": [0.7] * 6,
                                                 "model_config": {"arch": "deeplabv3", "encoder": "resnet101",
                                                                  "output_stride": 8, "backbone_weights": "coco"}})
    _json(runs / "p2_unet_r34" / "results.json", {"best_miou": 0.6970, "best_epoch": 4, "best_iou": [0.69] * 6,
                                                  "model_config": {"arch": "unet", "encoder": "resnet34"}})
    for figure in ("p1_dino/curves.png", "p1_A/curves.png", "p1_tsne/tsne.png", "p2_unet/snapshots.png",
                   "p2_unet/curves.png", "p2_deeplab/curves.png", "p2_sam/val0018_sam.png"):
        (runs / figure).parent.mkdir(parents=True, exist_ok=True)
        (runs / figure).write_bytes(figure.encode())
    _json(runs / "grading_p1.json", {"pred": "pred.csv", "labels": str(toy / "p1.csv"), "accuracy": 0.75,
                                     "num_images": 4})
    _json(runs / "grading_p2.json", {"pred": "masks", "labels": "elsewhere", "miou": 0.5, "num_images": 3})
    return runs


def test_the_whole_report_is_read_from_the_runs_files(runs, tmp_path):
    report_dir = tmp_path / "report"
    (report_dir / "figures").mkdir(parents=True)
    (report_dir / "figures" / "stale.png").write_bytes(b"an earlier report's")  # listed by that report
    (report_dir / "figures" / FIGURES_MARKER).write_text(
        "Files written by tools.report, relative to this folder (a rerun deletes these and only these):\nstale.png\n")
    text = write_report(str(runs), str(report_dir), note="seed 0, one GPU").read_text()
    assert text.startswith("# HW1 report\n\nBuilt by `python -m tools.report` from the results of the runs in "
                           "`../runs`;")
    assert "\nseed 0, one GPU\n" in text

    dino = _section(text, "DINO pre-training")
    assert _table(dino, "Run") == [{"Run": "p1_dino: ours, on the unlabeled mini set; settings C, E", "Backbone": "resnet50", "Epochs": "300", "Processes": "4",
                                         "Final loss": "2.3456", "k-NN at init": "0.1212",
                                         "k-NN at the end": "0.4848", "Teacher entropy at the end": "–", "ln(out_dim)": "–"}]
    assert GENERATED_NOTE in dino and "![DINO (p1_dino): loss" in dino

    settings = _section(text, "Settings A–E")
    assert _table(settings, "Setting") == [
        {"Setting": "A", "Pre-training": "pre A", "Fine-tuning": "fine A", "Validation accuracy (best)": "0.1872",
         "last epoch": "0.1500"},
        {"Setting": "C", "Pre-training": "pre C", "Fine-tuning": "fine C", "Validation accuracy (best)": "0.5345",
         "last epoch": "0.5001"}]
    assert REAL_NOTE in settings and GENERATED_NOTE not in settings
    assert "Chance level (always the most frequent validation class): 0.6000." in settings
    assert "Not run yet: p1_B, p1_D, p1_E." in settings
    assert "(figures/p1_A_curves.png)" in settings and "_(figure not found: ../runs/p1_C/curves.png)_" in settings

    tsne = _section(text, "t-SNE of the learned features")
    assert _table(tsne, "Checkpoint") == [
        {"Checkpoint": "first", "Setting": "C", "Epoch": "1", "Silhouette (features)": "0.0123",
         "Silhouette (2-D)": "0.0456", "k-NN (features)": "1"},
        {"Checkpoint": "last", "Setting": "–", "Epoch": "–", "Silhouette (features)": "0.3123",
         "Silhouette (2-D)": "0.3456", "k-NN (features)": "0.8000"}]
    assert "12 images of ../toy/p1.csv. {}".format(GENERATED_NOTE) in tsne

    iou = ["0.6100", "0.6200", "0.6300", "0.6400", "0.6500", "0.5306"]
    unet_row = dict(zip(["Model", "val mIoU (best)", "best epoch", "urban", "agriculture", "rangeland", "forest",
                         "water", "barren"], ["Model A: U-Net (from scratch, width 8, depth 3)", "0.6101", "7"] + iou))
    ablation = _section(text, "U-Net and the skip-connection ablation (one skip dropped)")
    assert _table(ablation, "Model") == [unet_row, dict(zip(unet_row, [
        "Model A, one skip dropped: U-Net (from scratch, width 8, depth 3, skip 0 (shallowest) dropped) (per-class IoU of the last epoch)",
        "0.2101", "5", "0.2100", "0.2200", "0.2300", "–", "–", "–"]))]
    chance = "Chance level (the best constant prediction, graded the same way): 0.3750."
    assert chance in ablation and GENERATED_NOTE in ablation and "Not run yet" not in ablation
    versus = _section(text, "U-Net vs DeepLabV3")
    assert [r["Model"] for r in _table(versus, "Model")] == [
        unet_row["Model"], "Model B: DeepLabV3-ResNet101 (COCO init, output stride 8)"]
    further = _section(text, "Further models (docs/problem2.md: Beating the baselines)")
    assert _table(further, "Model")[0]["Model"] == "p2_unet_r34: U-Net (ResNet-34 encoder, random init)"
    assert "![SAM masks: val0018](figures/p2_sam_val0018_sam.png)" in _section(text, "Segment Anything")

    grading = text.split("## The grading scripts\n", 1)[1]
    assert _table(grading, "Script") == [
        {"Script": "hw1_1.sh", "Output": "pred.csv", "Score": "accuracy 0.7500 (4 images)"},
        {"Script": "hw1_2.sh", "Output": "masks", "Score": "mIoU 0.5000 (3 masks)"}]
    assert GENERATED_NOTE in grading
    # every figure found is copied under its report name, and nothing else is left in the folder
    assert sorted(p.name for p in (report_dir / "figures").iterdir()) == sorted([FIGURES_MARKER,
        "p1_dino_curves.png", "p1_A_curves.png", "p1_tsne.png", "p2_unet_snapshots.png", "p2_unet_curves.png",
        "p2_deeplab_curves.png", "p2_sam_val0018_sam.png", "p1_settings_accuracy.png"])  # the last drawn here
    assert (report_dir / "figures" / "p2_unet_snapshots.png").read_bytes() == b"p2_unet/snapshots.png"
    # a report folder that does not exist yet, two levels down
    fresh = write_report(runs, tmp_path / "new" / "report").parent
    assert sorted(p.name for p in (fresh / "figures").iterdir()) == sorted(p.name for p in
                                                                          (report_dir / "figures").iterdir())


def test_chance_level_needs_the_runs_validation_csv(runs, tmp_path):
    from tools.report import p1_chance

    assert p1_chance(runs / "p1_A") == pytest.approx(0.6)
    _json(runs / "p1_A" / "args.json", {"val_csv": str(tmp_path / "missing.csv")})
    assert p1_chance(runs / "p1_A") is None
    assert p1_chance(tmp_path / "no_run") is None


def test_missing_runs_are_listed_as_not_run(tmp_path):
    (tmp_path / "runs").mkdir()
    text = write_report(tmp_path / "runs", tmp_path / "report").read_text()
    for line in ("_not run (no ../runs/p1_dino/results.json)_",
                 "_not run (no p1_A ... p1_E results)_",
                 "_not run (no ../runs/p1_tsne/tsne_metrics.json)_",
                 "_not run (p2_unet, p2_unet_drop_skip)_", "_not run (p2_unet, p2_deeplab)_",
                 "_not run (no ../runs/p2_sam/*_sam.png)_"):
        assert line in text
    assert "## The grading scripts" not in text and "Further models" not in text
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nowhere", tmp_path / "report")
    (tmp_path / "runs" / "p1_dino").mkdir()
    (tmp_path / "runs" / "p1_dino" / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="results.json is not valid JSON"):
        write_report(tmp_path / "runs", tmp_path / "report")


def test_grade_p1_and_the_command_lines(tmp_path, capsys, monkeypatch):
    labels, pred = tmp_path / "val.csv", tmp_path / "pred.csv"
    labels.write_text("id,filename,label\n0,a.jpg,1\n1,b.jpg,2\n2,c.jpg,3\n3,d.jpg,3\n")
    pred.write_text("id,filename,label\n9,d.jpg,3\n8,c.jpg,0\n7,b.jpg,2\n6,a.jpg,1\n")  # matched by name
    out = tmp_path / "runs" / "grading_p1.json"
    result = report_main(["grade-p1", "--pred", str(pred), "--labels", str(labels), "-o", str(out)])
    assert result == {"pred": str(pred), "labels": str(labels), "num_images": 4, "accuracy": 0.75}
    assert json.loads(out.read_text()) == result and json.loads(capsys.readouterr().out) == result
    pred.write_text("id,filename,label\n0,a.jpg,1\n1,b.jpg,2\n")
    with pytest.raises(ValueError, match="no prediction for 2 image.s. of .*, e.g. c.jpg"):
        grade_p1(pred, labels)
    for argv in ([], ["grade-p1", "--pred", str(pred), "-o", str(out)], ["grade-p2", "--labels", "x", "-o", "y"]):
        with pytest.raises(SystemExit):
            report_main(argv)
    # the report: -o, or by default the runs folder's sibling "report"
    assert report_main([str(tmp_path / "runs"), "-o", str(tmp_path / "here")]) == tmp_path / "here" / "REPORT.md"
    assert report_main([str(tmp_path / "runs")]) == tmp_path / "report" / "REPORT.md"
    assert "report: {}".format(tmp_path / "report" / "REPORT.md") in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["tools/report.py", str(tmp_path / "runs"), "-o", str(tmp_path / "argv")])
    assert report_main() == tmp_path / "argv" / "REPORT.md"  # the command line itself


def test_grade_p2_scores_masks_as_graded_with_nan_as_null(tmp_path):
    from utils.masks import write_mask

    labels, pred = tmp_path / "labels", tmp_path / "pred"
    labels.mkdir()
    pred.mkdir()
    write_mask(labels / "0000_mask.png", np.array([[0, 0], [1, 1]], dtype=np.uint8))
    write_mask(pred / "0000_mask.png", np.array([[0, 0], [0, 1]], dtype=np.uint8))
    out = tmp_path / "grading_p2.json"
    report_main(["grade-p2", "--pred", str(pred), "--labels", str(labels), "-o", str(out)])
    result = json.loads(out.read_text())
    assert result["num_images"] == 1 and result["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert result["iou"] == [pytest.approx(2 / 3), 0.5, None, None, None, None]


def test_missing_values_show_as_a_dash_and_unfinished_runs_are_named(tmp_path):
    runs = tmp_path / "runs"
    _json(runs / "p1_dino" / "results.json", {"arch": "resnet18", "epochs": 2, "world_size": 1,
                                              "final_loss": float("nan"), "final_knn_acc": None})  # no k-NN probe
    rows = _table(write_report(runs, tmp_path / "report").read_text(), "Run")
    assert rows == [{"Run": "p1_dino: ours, on the unlabeled mini set; settings C, E", "Backbone": "resnet18", "Epochs": "2", "Processes": "1", "Final loss": "–",
                     "k-NN at init": "–", "k-NN at the end": "–", "Teacher entropy at the end": "–", "ln(out_dim)": "–"}]
    from tools.report import load_results

    (runs / "p1_A").mkdir()
    with pytest.raises(FileNotFoundError, match="no results.json in .*p1_A .has the run finished"):
        load_results([runs / "p1_A"])


def _dino_run(folder, data_dir, knn, entropy, out_dim):
    """A finished DINO run folder as p1_ssl_pretrain.py leaves it (results.json, args.json, log.jsonl)."""
    folder.mkdir(parents=True)
    folder.joinpath("args.json").write_text(json.dumps({"data_dir": str(data_dir), "out_dim": out_dim,
                                                        "teacher_temp": 0.01}))
    folder.joinpath("log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"epoch": 0, "knn_acc": knn[0]}] + [{"epoch": e + 1, "loss": 5.0, "teacher_entropy": h}
                                           for e, h in enumerate(entropy)] + [{"epoch": len(entropy), "knn_acc": knn[1]}]))
    folder.joinpath("results.json").write_text(json.dumps({
        "arch": "resnet18", "epochs": len(entropy), "world_size": 1, "final_loss": 5.0, "initial_knn_acc": knn[0],
        "final_knn_acc": knn[1], "backbone": str(folder / "backbone.pth")}))
    return folder / "backbone.pth"


def test_dino_table_shows_knn_entropy_and_the_stand_in_and_b_d_name_the_tas_backbone(tmp_path):
    from tools.toydata import make_p1_data

    data = make_p1_data(tmp_path / "data", num_classes=2, mini_per_class=1, office_train_per_class=1,
                        office_val_per_class=1)
    runs = tmp_path / "runs"
    ours = _dino_run(runs / "p1_dino", data / "mini" / "train", (0.4214, 0.5571), [4.1, 2.2, 1.2345], 256)
    standin = _dino_run(runs / "p1_dino_standin", data / "mini" / "train", (0.43, 0.6), [1.0, 0.5], 256)
    real = tmp_path / "official_dino_model.pth"  # the TAs' file: not a run on generated data
    for setting, backbone in (("A", "none"), ("B", standin), ("C", ours), ("D", real)):
        folder = runs / "p1_{}".format(setting)
        folder.mkdir()
        folder.joinpath("results.json").write_text(json.dumps({
            "setting": setting, "backbone": str(backbone), "pretraining": "from the script", "finetuning": "full",
            "best_val_acc": 0.5, "last_val_acc": 0.5}))
    text = write_report(runs, tmp_path / "report").read_text()
    dino = text.split("### DINO pre-training")[1].split("###")[0]
    assert "| p1_dino: ours, on the unlabeled mini set; settings C, E | resnet18 | 3 | 1 | 5.0000 | 0.4214 | " \
           "0.5571 | 1.234 | 5.545 |" in dino  # entropy of the last epoch, ln(256)
    assert "| p1_dino_standin: stand-in for DINO on ImageNet-1k (TAs provided); settings B, D | resnet18 | 2 |" \
        in dino and "| 0.4300 | 0.6000 | 0.500 | 5.545 |" in dino
    assert "Source: data generated by `tools.toydata`" in dino and "not run" not in dino
    assert "figures/p1_dino_curves.png" not in dino  # no curves.png in these folders: named as not found
    table = text.split("### Settings A–E")[1]
    assert "| A | from the script |" in table and "| C | from the script |" in table
    assert "| B | stand-in for DINO on ImageNet-1k (TAs provided): DINO on generated data (p1_dino_standin) |" \
        in table
    assert "| D | DINO on ImageNet-1k (TAs provided) |" in table


def test_dino_table_without_our_run_says_so(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    dino = write_report(runs, tmp_path / "report").read_text().split("### DINO pre-training")[1].split("###")[0]
    assert "_not run (no ../runs/p1_dino/results.json)_" in dino and "| Run |" not in dino
    (tmp_path / "somewhere").mkdir()  # data that exist, not generated: the course's (a folder gone is unknown)
    _dino_run(runs / "p1_dino_standin", tmp_path / "somewhere", (0.43, 0.6), [1.0, 0.5], 4096)
    dino = write_report(runs, tmp_path / "report").read_text().split("### DINO pre-training")[1].split("###")[0]
    assert "_not run (no ../runs/p1_dino/results.json)_" in dino
    assert "| 0.4300 | 0.6000 | 0.500 | 8.318 |" in dino and "Source: the course's data" in dino


def test_b_and_d_rows_without_a_backbone_path_keep_their_own_pretraining_text(tmp_path):
    """A results.json written before runs recorded their backbone (no "backbone" key, or "none")."""
    runs = tmp_path / "runs"
    for setting, extra in (("B", {}), ("D", {"backbone": "none"})):
        _json(runs / ("p1_" + setting) / "results.json", dict(extra, setting=setting, pretraining="as recorded",
                                                              finetuning="full", best_val_acc=0.5, last_val_acc=0.5))
    rows = _table(write_report(runs, tmp_path / "report").read_text(), "Setting")
    assert [(r["Setting"], r["Pre-training"]) for r in rows] == [("B", "as recorded"), ("D", "as recorded")]


def test_report_holds_no_absolute_path_of_this_machine_and_its_paths_resolve_from_its_folder(runs, tmp_path):
    # the demo passes absolute paths everywhere (runs folder, csvs, grading outputs); the report shows each one
    # relative to the report's folder, so it reads the same on any machine and each path works from REPORT.md
    shutil.rmtree(str(runs / "p1_dino"))  # a "not run" line names the missing file
    _json(runs / "grading_p1.json", {"pred": str(tmp_path / "pred.csv"), "labels": str(tmp_path / "toy" / "p1.csv"),
                                     "accuracy": 0.75, "num_images": 4})
    report_dir = tmp_path / "out" / "report"
    text = write_report(runs, report_dir).read_text()
    assert str(tmp_path) not in text
    for line in ("from the results of the runs in `../../runs`; no number is typed in. Every path in this report is "
                 "relative to its folder.",
                 "_not run (no ../../runs/p1_dino/results.json)_", "_(figure not found: ../../runs/p1_C/curves.png)_",
                 "12 images of ../../toy/p1.csv.", "| hw1_1.sh | ../../pred.csv | accuracy 0.7500 (4 images) |"):
        assert line in text, line
    for rel, path in (("../../runs/p1_C", runs / "p1_C"), ("../../toy/p1.csv", tmp_path / "toy" / "p1.csv"),
                      ("../../pred.csv", tmp_path / "pred.csv")):
        assert os.path.normpath(os.path.join(str(report_dir), rel)) == str(path)


def _saved(monkeypatch):
    """{file name: figure} of every Figure.savefig from now on, read before the report closes the figure."""
    import matplotlib.figure

    from helpers import figure_target

    saved = {}
    real_savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, path, **kw: saved.__setitem__(
        figure_target(path), fig) or real_savefig(fig, path, **kw))
    return saved


def test_the_settings_are_compared_in_one_bar_chart_of_the_runs_accuracies(runs, tmp_path, monkeypatch):
    """Before, REPORT.md had the A-E table and one curve figure per setting, nothing side by side: a bar per
    setting that was run (A and C here, in order), its height that run's best validation accuracy, chance
    dashed; B is added as soon as its run is there."""
    saved = _saved(monkeypatch)
    text = write_report(runs, tmp_path / "report").read_text()
    assert (tmp_path / "report" / "figures" / "p1_settings_accuracy.png").stat().st_size > 0
    assert "![Settings A–E side by side: best validation accuracy](figures/p1_settings_accuracy.png)" in \
        _section(text, "Settings A–E")
    (ax,) = saved["p1_settings_accuracy.png"].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "C"]
    assert [p.get_height() for p in ax.patches] == [0.1872, 0.5345]  # p1_A/, p1_C/results.json
    assert [t.get_text() for t in ax.texts] == ["0.1872", "0.5345"]
    (chance,) = ax.get_lines()
    assert list(chance.get_ydata()) == [pytest.approx(0.6)] * 2  # 3 of the 5 validation labels are class 2
    _json(runs / "p1_B" / "results.json", {"setting": "B", "best_val_acc": 0.8079, "last_val_acc": 0.8})
    write_report(runs, tmp_path / "report")
    ax = saved["p1_settings_accuracy.png"].axes[0]
    assert [(t.get_text(), p.get_height()) for t, p in zip(ax.get_xticklabels(), ax.patches)] == [
        ("A", 0.1872), ("B", 0.8079), ("C", 0.5345)]


def test_the_two_unets_are_compared_side_by_side_curves_and_masks(runs, tmp_path, monkeypatch):
    """The ablation as figures: both U-Nets' validation mIoU per epoch on one axes (from their log.jsonl), and
    their masks side by side at the last snapshot epoch both have, beside the input and the ground truth, with
    the colour key."""
    from utils.masks import CLASS_NAMES, PALETTE, write_mask

    logs = {"p2_unet": [0.2, 0.45, 0.6101], "p2_unet_drop_skip": [0.1, 0.2101]}
    for name, mious in logs.items():
        (runs / name / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
            {"epoch": e + 1, "train_loss": 1.0, "val_miou": m} for e, m in enumerate(mious)] + [{"note": "x"}]))
    masks = {}
    for name, epochs in (("p2_unet", (1, 3)), ("p2_unet_drop_skip", (1, 2))):  # last common epoch: 1
        for epoch in epochs:
            for image_id, shape in (("0000", (2, 2)), ("0001", (2, 3))):
                masks[name, epoch, image_id] = np.full(shape, (epoch + len(name)) % 7, dtype=np.uint8)
                folder = runs / name / "snapshots" / "epoch_{:03d}".format(epoch)
                folder.mkdir(parents=True, exist_ok=True)
                write_mask(folder / (image_id + "_mask.png"), masks[name, epoch, image_id])
    saved = _saved(monkeypatch)
    text = write_report(runs, tmp_path / "report").read_text()
    ablation = _section(text, "U-Net and the skip-connection ablation (one skip dropped)")
    for name in ("p2_unet_vs_drop_skip_miou.png", "p2_unet_vs_drop_skip_masks.png"):
        assert "](figures/{})".format(name) in ablation
        assert (tmp_path / "report" / "figures" / name).stat().st_size > 0
    (ax,) = saved["p2_unet_vs_drop_skip_miou.png"].axes
    assert [line.get_xydata().tolist() for line in ax.get_lines()] == [
        [[e + 1, m] for e, m in enumerate(logs[name])] for name in ("p2_unet", "p2_unet_drop_skip")]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["U-Net", "U-Net, skip 0 (shallowest) dropped"]
    fig = saved["p2_unet_vs_drop_skip_masks.png"]
    panels = [(ax.get_title(), ax.get_images()[0].get_array() if ax.get_images() else None) for ax in fig.axes]
    assert [title for title, _ in panels] == [
        "0000: input", "ground truth", "U-Net", "U-Net, skip 0 (shallowest) dropped",
        "0001: input", "ground truth", "U-Net", "U-Net, skip 0 (shallowest) dropped"]
    truth = {"0000": np.zeros((2, 2), dtype=np.uint8), "0001": np.array([[0, 0, 1], [1, 6, 6]])}  # red: black
    for row, image_id in enumerate(["0000", "0001"]):
        assert panels[4 * row][1] is None  # the fixture's empty .jpg cannot be read: an empty panel
        want = [PALETTE[truth[image_id]], PALETTE[masks["p2_unet", 1, image_id]],
                PALETTE[masks["p2_unet_drop_skip", 1, image_id]]]
        for (_, got), expected in zip(panels[4 * row + 1:4 * row + 4], want):
            assert np.array_equal(np.asarray(got), expected)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(CLASS_NAMES)
    assert "masks at epoch 1" in ablation


def test_the_report_replaces_only_what_it_made(runs, tmp_path):
    """Before: `python -m tools.report RUNS -o DIR` deleted DIR/figures/ whole, even when the report had not made it
    (a user's figures folder), and replaced any DIR/REPORT.md. Now figures/ is cleared only of the files an earlier
    report listed in it, a folder without that list is refused, and REPORT.md is replaced only when it is a report."""
    mine = tmp_path / "mine"
    (mine / "figures").mkdir(parents=True)
    (mine / "figures" / "plot.png").write_bytes(b"a user's figure")
    with pytest.raises(ValueError, match="holds no list of files written by tools.report"):
        write_report(runs, mine)
    assert (mine / "figures" / "plot.png").read_bytes() == b"a user's figure"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "REPORT.md").write_text("# My own notes\n")
    with pytest.raises(ValueError, match="refusing to replace {}".format(notes / "REPORT.md")):
        write_report(runs, notes)
    assert (notes / "REPORT.md").read_text() == "# My own notes\n"
    again = write_report(runs, write_report(runs, tmp_path / "ours").parent)  # a report replaces its own
    assert again.read_text().startswith("# HW1 report")


# ---------------------------------------------------------------- what the data were, what setting C really used

def _settings_source(text):
    settings = _section(text, "Settings A–E")
    return [note for note in (GENERATED_NOTE, REAL_NOTE) if note in settings], settings


def test_a_run_recorded_as_generated_is_labelled_generated_after_its_data_folder_is_deleted(runs, tmp_path):
    """Before: the report asked tools.toydata.is_generated(--data-dir) at report time, so a generated data folder
    moved or deleted after training made the runs "the course's data". Now results.json's "data" record decides;
    without it and without the folder, the source is unknown, never the course's."""
    data = tmp_path / "gone"
    for setting in ("A", "C"):
        _json(runs / ("p1_" + setting) / "args.json", {"data_dir": str(data / "office")})
        record = json.loads((runs / ("p1_" + setting) / "results.json").read_text())
        record["data"] = {"root": str(data / "office"), "generated": True, "count": 10, "fingerprint": "abc"}
        _json(runs / ("p1_" + setting) / "results.json", record)
    notes, _ = _settings_source(write_report(runs, tmp_path / "report").read_text())
    assert notes == [GENERATED_NOTE]
    for setting in ("A", "C"):  # results.json without the record, data folder gone: unknown
        record = json.loads((runs / ("p1_" + setting) / "results.json").read_text())
        del record["data"]
        _json(runs / ("p1_" + setting) / "results.json", record)
    notes, settings = _settings_source(write_report(runs, tmp_path / "report").read_text())
    assert notes == [] and "Source: unknown" in settings
    # the record says the course's data: so it is, although the folder is gone
    record = json.loads((runs / "p1_A" / "results.json").read_text())
    record["data"] = {"root": "/data_2025/p1_data/office", "generated": False, "count": 10, "fingerprint": "abc"}
    for setting in ("A", "C"):
        _json(runs / ("p1_" + setting) / "results.json", dict(record, setting=setting))
    notes, _ = _settings_source(write_report(runs, tmp_path / "report").read_text())
    assert notes == [REAL_NOTE]


def test_setting_c_or_e_without_our_dino_backbone_is_not_called_the_ssl_backbone(tmp_path):
    """Before: `p1_finetune.py --setting C --backbone none` wrote "w/o label (your SSL pre-trained backbone)" and
    the report showed it as such. Now the cell says what was used: random init, or the backbone of a run that is
    not DINO; C with our DINO run's backbone keeps its text."""
    runs = tmp_path / "runs"
    ours = _dino_run(runs / "p1_dino", tmp_path / "data", (0.4, 0.5), [1.0], 256)
    _json(runs / "p1_A" / "args.json", {"setting": "A", "data_dir": str(tmp_path / "data")})  # a classifier run
    ssl = "w/o label (your SSL pre-trained backbone)"
    for setting, backbone in (("A", "none"), ("C", "none"), ("D", str(ours)),
                              ("E", str(runs / "p1_A" / "backbone.pth"))):
        _json(runs / ("p1_" + setting) / "results.json", {
            "setting": setting, "backbone": backbone, "pretraining": ssl if setting in "CE" else "-",
            "finetuning": "full", "best_val_acc": 0.5, "last_val_acc": 0.5})
    cells = {r["Setting"]: r["Pre-training"] for r in _table(write_report(runs, tmp_path / "report").read_text(),
                                                              "Setting")}
    assert cells["C"] == "random init (run with --backbone none), not the SSL pre-trained backbone"
    assert cells["E"] == "from p1_A/backbone.pth (not a DINO run), not the SSL pre-trained backbone"
    # the backbone of our DINO run: the SSL backbone, as recorded; an older results.json without "backbone"
    # takes the choice from the run's args.json
    _json(runs / "p1_E" / "results.json", {"setting": "E", "backbone": str(ours), "pretraining": ssl,
                                           "finetuning": "frozen", "best_val_acc": 0.5, "last_val_acc": 0.5})
    _json(runs / "p1_C" / "results.json", {"setting": "C", "pretraining": ssl, "finetuning": "full",
                                           "best_val_acc": 0.5, "last_val_acc": 0.5})
    _json(runs / "p1_C" / "args.json", {"setting": "C", "backbone": "none"})
    cells = {r["Setting"]: r["Pre-training"] for r in _table(write_report(runs, tmp_path / "report").read_text(),
                                                              "Setting")}
    assert cells["E"] == ssl
    assert cells["C"] == "random init (run with --backbone none), not the SSL pre-trained backbone"


WRONG_TYPES = [  # (file in the runs folder, field, a value of the wrong type)
    ("p2_unet/results.json", "best_iou", "0.61"),
    ("p2_unet/results.json", "best_iou", [["0.61"]]),
    ("p2_unet/results.json", "best_miou", "0.61"),
    ("p2_unet/results.json", "model_config", "unet"),
    ("p2_unet/results.json", "model_config", {"arch": "unet", "depth": "four", "drop_skip": [1]}),
    ("p2_unet/results.json", "model_config", {"arch": "unet", "drop_skip": 3}),
    ("p1_dino/args.json", "out_dim", [256]),
    ("p1_dino/results.json", "final_loss", {"value": 2}),
    ("p1_A/results.json", "best_val_acc", "0.5"),
    ("p1_A/results.json", "setting", 5),
    ("p1_A/args.json", "data_dir", ["data"]),
    ("p1_A/results.json", "data", "generated"),
    ("p1_tsne/tsne_metrics.json", "checkpoints", "last"),
    ("grading_p1.json", "accuracy", "0.75"),
]


@pytest.mark.parametrize("name,field,value", WRONG_TYPES)
def test_a_field_of_the_wrong_type_is_a_one_line_error_naming_file_and_field(runs, tmp_path, name, field, value):
    """Before: a string best_iou, a list out_dim, a model_config that is not an object (...) ended in a traceback
    (TypeError, AttributeError) or a wrong table. Now every field the report reads is checked in one place."""
    record = json.loads((runs / name).read_text()) if (runs / name).is_file() else {}
    record[field] = value
    _json(runs / name, record)
    with pytest.raises(ValueError) as info:
        write_report(runs, tmp_path / "report")
    message = str(info.value)
    assert "\n" not in message and str(runs / name) in message and "'{}".format(field) in message, message


def test_a_wrongly_typed_field_on_the_command_line_is_exit_2_without_a_traceback(runs, tmp_path, repo_root):
    import subprocess

    _json(runs / "p2_unet" / "results.json", dict(json.loads((runs / "p2_unet" / "results.json").read_text()),
                                                  best_iou="0.61"))
    proc = subprocess.run([sys.executable, "-m", "tools.report", str(runs), "-o", str(tmp_path / "report")],
                          cwd=str(repo_root), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: {}: ".format(runs / "p2_unet" / "results.json")) and \
        "'best_iou'" in proc.stderr and proc.stderr.count("\n") == 1
