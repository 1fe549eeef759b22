"""The run log: JSON lines, curves, and the optional TensorBoard events (scalars per epoch, figures as images)."""
import json

import pytest

import p2_unet
from helpers import run_main
from utils.runlog import RunLog


def test_jsonl_curves_and_truncation(tmp_path):
    log = RunLog(tmp_path, curve_keys=("loss",), title="t")
    for epoch in (1, 2, 3):
        log.log({"epoch": epoch, "loss": 1.0 / epoch})
    assert [r["epoch"] for r in log.records()] == [1, 2, 3]
    assert (tmp_path / "curves.png").stat().st_size > 0
    log.truncate_after(1)
    assert [r["epoch"] for r in log.records()] == [1]
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"epoch": 9, "lo')  # a torn last line (killed mid-write) is skipped
    assert [r["epoch"] for r in log.records()] == [1]
    assert RunLog(tmp_path / "x", enabled=False).records() == []
    log.truncate_after(1)  # a resume drops the torn line too
    log.log({"epoch": 2, "loss": 0.5})
    RunLog(tmp_path, enabled=False).truncate_after(1)  # another rank's log leaves the main process's file alone
    assert [r["epoch"] for r in log.records()] == [1, 2]
    assert log.writer is None and RunLog(tmp_path, enabled=False, tensorboard=True).writer is None
    log.close()  # no TensorBoard writer: nothing to close


def test_the_curves_are_one_panel_per_logged_key_against_epoch_titled_by_the_run(tmp_path, monkeypatch):
    """What curves.png shows, read from the figure as it is saved."""
    import matplotlib.figure

    from utils.runlog import plot_curves

    saved = []
    real_savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, path, **kw: saved.append((fig, kw)) or real_savefig(fig, path, **kw))
    log = RunLog(tmp_path, curve_keys=("loss", "val_miou", "never_logged"), title="U-Net, 7 classes")
    log.log({"epoch": 1, "loss": 2.0, "val_miou": None})
    log.log({"epoch": 2, "loss": 1.5, "val_miou": 0.25})
    fig, options = saved[-1]
    assert options == {"dpi": 100, "format": "png"} and fig._suptitle.get_text() == "U-Net, 7 classes"
    assert [(ax.get_title(), ax.get_xlabel()) for ax in fig.axes] == [("loss", "epoch"), ("val_miou", "epoch")]
    assert [ax.lines[0].get_xydata().tolist() for ax in fig.axes] == [[[1, 2.0], [2, 1.5]], [[2, 0.25]]]
    assert all(ax.lines[0].get_marker() == "o" for ax in fig.axes)  # val_miou's one point shows as a dot
    assert tuple(fig.get_size_inches()) == pytest.approx((2 * 4.2, 3.2))
    plot_curves(log.records(), ["loss"], tmp_path / "untitled.png")
    assert saved[-1][0]._suptitle is None and (tmp_path / "untitled.png").stat().st_size > 0


def test_tensorboard_events_on_generated_data(toy_p2, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    run_main(p2_unet, ["--data-dir", toy_p2, "--output-dir", out, "--epochs", "2", "--batch-size", "4",
                       "--crop-size", "64", "--base-width", "8", "--depth", "3", "--workers", "0",
                       "--snapshot-epochs", "1", "2", "--snapshot-images", "0000_sat.jpg", "--tensorboard"])
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    miou = [(e.step, e.value) for e in acc.Scalars("val_miou")]
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert miou == [(r["epoch"], pytest.approx(r["val_miou"], rel=1e-6)) for r in logged]
    assert [e.step for e in acc.Images("snapshots")] == [1, 2]


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name == "tensorboard":
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(SystemExit, match="pip install tensorboard"):
        RunLog(tmp_path, tensorboard=True)


@pytest.mark.parametrize("rank, env, shown", [(0, None, True), (0, "", True), (0, "0", True), (1, "", False),
                                              (0, "1", False)])
def test_the_progress_bar_shows_on_the_main_process_only_unless_tqdm_disable(monkeypatch, rank, env, shown):
    import torch.distributed as dist

    from utils.runlog import progress

    if env is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", env)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: rank)
    bar = progress(range(3), desc="epoch 1/2")
    assert bar.disable is not shown and list(bar) == [0, 1, 2]  # (a finished bar is closed: disable then)


def test_tensorboard_gets_each_numeric_value_but_the_epoch_as_a_scalar_at_that_epoch(tmp_path):
    class Writer(object):
        def __init__(self):
            self.scalars = []

        def add_scalar(self, key, value, step):
            self.scalars.append((key, value, step))

        def flush(self):
            pass

    log = RunLog(tmp_path)
    log.writer = Writer()
    log.log({"epoch": 2, "loss": 0.5, "val_miou": 1, "collapsed": True, "note": "text", "val_iou": [0.1, 0.2]})
    assert log.writer.scalars == [("loss", 0.5, 2), ("val_miou", 1, 2)]
