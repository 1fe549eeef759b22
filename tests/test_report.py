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
