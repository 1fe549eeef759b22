"""tools/report.py names each segmentation model and its options from the run's saved config."""
import json

from tools.report import describe_model, write_report


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
                           "backbone_weights": "imagenet"}) == "U-Net (ResNet-34 encoder, ImageNet, skip 0 dropped)"
    assert describe_model({"arch": "unet", "base_width": 64, "depth": 4, "drop_skip": [0, 1]}) == \
        "U-Net (from scratch, width 64, depth 4, skips 0, 1 dropped)"
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
    rows = _table(write_report(runs, tmp_path / "report").read_text(), "Backbone")
    assert rows == [{"Backbone": "resnet34", "Epochs": "77", "Processes": "3", "Final loss": "5.4321",
                     "k-NN at init": "0.1234", "k-NN at the end": "0.8765"}]
