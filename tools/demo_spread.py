"""Run the demo over seeds and CPU thread counts and print each number the README quotes with its spread.

    python -m tools.demo_spread --seeds 0 1 2 --threads 1 2            # 6 demos into demo_spread/, ~5 min each
    python -m tools.demo_spread --seeds 0 1 2 --threads 1 2 --collect  # only read the finished runs again

Each (seed, threads) pair is one ``bash demo.sh demo_spread/seed{S}_threads{T}`` with DEMO_SEED=S and
DEMO_THREADS=T (the pip step skipped); a pair whose REPORT.md exists is not run again. The numbers are read from
the runs' own files (results.json, log.jsonl, grading_*.json), one row per number with every run's value and the
min / median / max over the runs, then how often setting C beats setting A; ``spread.json`` keeps them all.
A CPU sums in an order that depends on the thread count, so one seed's numbers differ between 1 and 2 threads:
this is how a user can see how far a quoted number holds on another machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from utils.fileio import write_text

REPO = Path(__file__).resolve().parents[1]


def _json(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _dino_numbers(run: Path) -> Dict[str, Optional[float]]:
    """k-NN at init, at the end and the teacher entropy of the last epoch of a DINO run folder."""
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()] \
        if (run / "log.jsonl").is_file() else []
    res = _json(run / "results.json")
    entropy = [r["teacher_entropy"] for r in log if "teacher_entropy" in r]
    return {"knn_init": res.get("initial_knn_acc"), "knn_end": res.get("final_knn_acc"),
            "entropy_end": entropy[-1] if entropy else None}


def demo_numbers(out: Path) -> Dict[str, Optional[float]]:
    """Every number the README quotes for one demo output folder (None where a run is missing)."""
    runs = out / "runs"
    numbers = {}  # type: Dict[str, Optional[float]]
    for name, key in (("p1_dino", "dino"), ("p1_dino_standin", "standin")):
        for k, v in _dino_numbers(runs / name).items():
            numbers["{}_{}".format(key, k)] = v
    for s in "ABCDE":
        numbers["acc_" + s] = _json(runs / "p1_{}".format(s) / "results.json").get("best_val_acc")
    numbers["hw1_1_acc"] = _json(runs / "grading_p1.json").get("accuracy")
    for name, key in (("p2_unet", "unet"), ("p2_unet_drop_skip", "unet_drop_skip"), ("p2_deeplab", "deeplab")):
        numbers["miou_" + key] = _json(runs / name / "results.json").get("best_miou")
    numbers["hw1_2_miou"] = _json(runs / "grading_p2.json").get("miou")
    return numbers


def summarize(table: Dict[str, Dict[str, Optional[float]]]) -> Dict[str, Any]:
    """Per number: each run's value, min, median, max; and the runs where C beats A (best validation accuracy)."""
    names = list(next(iter(table.values())).keys()) if table else []
    rows = {}
    for name in names:
        values = [run[name] for run in table.values() if run.get(name) is not None]
        rows[name] = {"runs": {k: run.get(name) for k, run in table.items()},
                      "min": min(values) if values else None, "median": statistics.median(values) if values else None,
                      "max": max(values) if values else None}
    c_beats_a = [k for k, run in table.items() if None not in (run.get("acc_C"), run.get("acc_A"))
                 and run["acc_C"] > run["acc_A"]]
    compared = [k for k, run in table.items() if None not in (run.get("acc_C"), run.get("acc_A"))]
    return {"numbers": rows, "c_beats_a": c_beats_a, "compared": compared}


def _fmt(v: Optional[float]) -> str:
    return "–" if v is None else "{:.3f}".format(v)


def print_summary(summary: Dict[str, Any], keys: Sequence[str]) -> None:
    print("| number | " + " | ".join(keys) + " | min | median | max |")
    print("|---|" + "---|" * (len(keys) + 3))
    for name, row in summary["numbers"].items():
        print("| {} | {} | {} | {} | {} |".format(name, " | ".join(_fmt(row["runs"].get(k)) for k in keys),
                                                  _fmt(row["min"]), _fmt(row["median"]), _fmt(row["max"])))
    print("setting C beats setting A in {} of {} runs{}".format(
        len(summary["c_beats_a"]), len(summary["compared"]),
        ": " + ", ".join(summary["c_beats_a"]) if summary["c_beats_a"] else ""))


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m tools.demo_spread", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="DEMO_SEED values (default 0 1 2)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="DEMO_THREADS values (default 1 2)")
    parser.add_argument("--out", type=Path, default=Path("demo_spread"), help="folder of the demo outputs")
    parser.add_argument("--collect", action="store_true", help="run nothing, only read the finished demos")
    args = parser.parse_args(argv)
    table = {}  # type: Dict[str, Dict[str, Optional[float]]]
    for seed in args.seeds:
        for threads in args.threads:
            key = "seed{}_threads{}".format(seed, threads)
            out = args.out / key
            if not args.collect and not (out / "report" / "REPORT.md").is_file():
                env = dict(os.environ, DEMO_SEED=str(seed), DEMO_THREADS=str(threads), DEMO_SKIP_INSTALL="1",
                           TQDM_DISABLE="1")
                out.mkdir(parents=True, exist_ok=True)
                print("== {}".format(key), flush=True)
                with open(str(out / "demo.log"), "w") as log:
                    code = subprocess.call(["bash", str(REPO / "demo.sh"), str(out.resolve())], env=env,
                                           stdout=log, stderr=subprocess.STDOUT)
                if code != 0:
                    print("demo {} failed (exit {}): see {}".format(key, code, out / "demo.log"), file=sys.stderr)
            table[key] = demo_numbers(out)
    summary = summarize(table)
    summary["seeds"], summary["threads"] = args.seeds, args.threads
    write_text(args.out / "spread.json", json.dumps(summary, indent=2) + "\n", "spread summary")
    print_summary(summary, list(table))
    return summary


if __name__ == "__main__":
    main()
