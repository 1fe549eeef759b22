"""Gather the problem-1 runs (their results.json) into the report's A-E table.

    python -m utils.report runs/p1_A runs/p1_B runs/p1_C runs/p1_D runs/p1_E [--markdown OUT.md]
"""
import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional


def load_results(run_dirs: List[Path]) -> List[Dict[str, Any]]:
    """results.json of every run folder, sorted by setting; a clear error for a folder without one."""
    rows = []
    for run in run_dirs:
        path = Path(run) / "results.json"
        if not path.is_file():
            raise FileNotFoundError("no results.json in {} (has the run finished?)".format(run))
        with open(path) as f:
            rows.append(dict(json.load(f), run=str(run)))
    return sorted(rows, key=lambda r: (r.get("setting", ""), r["run"]))


def settings_table(rows: List[Dict[str, Any]], source_note: str = "") -> str:
    """Markdown table: Setting | Pre-training | Fine-tuning | Validation accuracy (best, last)."""
    lines = ["| Setting | Pre-training | Fine-tuning | Validation accuracy (best) | last epoch |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append("| {} | {} | {} | {:.4f} | {:.4f} |".format(
            r.get("setting", "?"), r.get("pretraining", "?"), r.get("finetuning", "?"),
            r.get("best_val_acc", float("nan")), r.get("last_val_acc") or float("nan")))
    if source_note:
        lines.append("")
        lines.append(source_note)
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(description="The report's problem-1 table from finished runs.")
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of p1_finetune.py (with results.json)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--note", default="", help="a line under the table (e.g. 'generated data')")
    args = parser.parse_args(argv)
    table = settings_table(load_results(args.runs), args.note)
    print(table)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
