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
    assert "_not run (no {}/results.json)_".format(runs / "p1_dino") in dino and "| Run |" not in dino
    _dino_run(runs / "p1_dino_standin", tmp_path / "somewhere", (0.43, 0.6), [1.0, 0.5], 4096)
    dino = write_report(runs, tmp_path / "report").read_text().split("### DINO pre-training")[1].split("###")[0]
    assert "_not run (no {}/results.json)_".format(runs / "p1_dino") in dino
    assert "| 0.4300 | 0.6000 | 0.500 | 8.318 |" in dino and "Source: the course's data" in dino
