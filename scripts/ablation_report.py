"""Tables and plots of the TSF x BOX ablation from the rows' ``sparrow eval rvos`` reports (docs/results.md).

    python scripts/ablation_report.py --out docs/results_tables.md --plots docs/images \
        "[SEG] only=runs/ablation/report_seg_only" "+[BOX]=runs/ablation/report_box" ...

Each ROW is ``label=report_folder`` (a folder holding ``report.json``). Writes the markdown tables (overall with
each row's J&F 95 % interval, J&F per tag, identity-switch rate per tag) and two PNG plots, all atomically; prints
the overall table. Each ``--pair "A=>B"`` (two row labels) adds the paired J&F difference B - A with its 95 %
interval, bootstrapped over videos (``sparrow.eval.intervals``): both reports must score the same expressions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sparrow.atomic import atomic_file, atomic_path
from sparrow.errors import SparrowError
from sparrow.eval.intervals import bootstrap_ratio

METRICS = [
    ("J&F", "J&F"),
    ("J", "J"),
    ("F", "F"),
    ("first-frame IoU", "first_iou"),
    ("identity-switch rate", "id_switch"),
    ("drift", "drift"),
]


def load_rows(items: list[str]) -> list[tuple[str, dict]]:
    """``(label, report)`` per ``label=report_folder``; the report is the folder's whole ``report.json``."""
    rows = []
    for item in items:
        label, sep, folder = item.partition("=")
        if not sep:
            raise SparrowError(f"row {item!r} is not label=report_folder")
        path = Path(folder) / "report.json"
        if not path.exists():
            raise SparrowError("missing report", path)
        rows.append((label, json.loads(path.read_text())))
    return rows


def paired_difference(a: dict, b: dict) -> tuple[float, float, float]:
    """J&F of report ``b`` minus report ``a`` over the expressions both score, ``(estimate, low, high)`` with a
    95 % interval from resampling videos; the two reports must hold the same (video, expression) pairs."""
    scores = [{(e["video"], e["exp_id"]): float(e["J&F"]) for e in r.get("expressions", [])} for r in (a, b)]
    if not scores[0] or set(scores[0]) != set(scores[1]):
        raise SparrowError("a pair's reports do not score the same expressions")
    videos: dict[str, list[float]] = {}
    for key, value in scores[0].items():
        videos.setdefault(key[0], []).append(scores[1][key] - value)
    diffs = list(videos.values())
    return bootstrap_ratio([sum(d) for d in diffs], [len(d) for d in diffs])


def pair_table(rows: list[tuple[str, dict]], pairs: list[str]) -> str:
    """The ``--pair "A=>B"`` rows: paired J&F difference B - A with its video-bootstrap interval."""
    reports = dict(rows)
    lines = ["", "### Paired J&F differences (95 % interval over videos)", "", "| pair | B - A | 95 % interval |"]
    lines.append("|---|---|---|")
    for pair in pairs:
        a, sep, b = pair.partition("=>")
        if not sep or a not in reports or b not in reports:
            raise SparrowError(f"pair {pair!r} is not 'A=>B' with two row labels")
        est, low, high = paired_difference(reports[a], reports[b])
        lines.append(f"| {b} vs {a} | {est:+.3f} | [{low:+.3f}, {high:+.3f}] |")
    return "\n".join(lines) + "\n"


def metric(summary: dict, key: str) -> float:
    return float(summary["consistency"][key] if key in summary.get("consistency", {}) else summary[key])


def interval(summary: dict) -> str:
    """The row's J&F 95 % interval over videos, as the eval report gives it ("-" when absent)."""
    low, high = summary.get("J&F 95% low"), summary.get("J&F 95% high")
    return "-" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


def tables(reports: list[tuple[str, dict]]) -> str:
    rows = [(label, r["summary"]) for label, r in reports]
    head = "| row | " + " | ".join(name for name, _ in METRICS[:1]) + " | J&F 95 % interval | "
    head += " | ".join(name for name, _ in METRICS[1:]) + " |"
    lines = ["### Overall", "", head, "|---" * (len(METRICS) + 2) + "|"]
    for label, s in rows:
        cells = [f"{metric(s, key):.3f}" for _, key in METRICS]
        lines.append(f"| {label} | {cells[0]} | {interval(s)} | " + " | ".join(cells[1:]) + " |")
    tags = sorted({t for _, s in rows for t in s.get("by_tag", {})})
    per_tag = (
        ("J&F", "J&F"),
        ("First-frame IoU", "first_iou"),
        ("Identity-switch rate", "id_switch"),
        ("Drift", "drift"),
    )
    for title, key in ((f"{name} per tag", key) for name, key in per_tag):
        lines += [
            "",
            f"### {title}",
            "",
            "| row | " + " | ".join(f"{t} (n={rows[0][1]['by_tag'].get(t, {}).get('n', 0)})" for t in tags) + " |",
        ]
        lines.append("|---" * (len(tags) + 1) + "|")
        for label, s in rows:
            lines.append(
                f"| {label} | "
                + " | ".join(f"{s['by_tag'][t][key]:.3f}" if t in s["by_tag"] else "-" for t in tags)
                + " |"
            )
    return "\n".join(lines) + "\n"


def grouped_bars(
    groups: list[str], values: list[tuple[str, list[float]]], title: str, path: Path, ylabel: str = ""
) -> None:
    """One bar per (row, group), rows side by side within each group; written atomically as PNG."""
    fig, ax = plt.subplots(figsize=(9, 3.6))
    x = np.arange(len(groups))
    width = 0.8 / len(values)
    for i, (label, ys) in enumerate(values):
        ax.bar(x + i * width, ys, width, label=label)
    ax.set_xticks(x + 0.4 - width / 2, groups)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncols=2)
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plots(reports: list[tuple[str, dict]], folder: Path) -> None:
    rows = [(label, r["summary"]) for label, r in reports]
    keys = [("J&F", "J&F"), ("first-frame IoU", "first_iou"), ("identity-switch rate", "id_switch")]
    overall = [(label, [metric(s, k) for _, k in keys]) for label, s in rows]
    grouped_bars(
        [name for name, _ in keys],
        overall,
        f"TSF x BOX ablation, SynthRef test ({rows[0][1].get('n_expressions', '?')} expressions)",
        folder / "ablation_overall.png",
    )
    tags = sorted({t for _, s in rows for t in s.get("by_tag", {})})
    per_tag = [(label, [s["by_tag"].get(t, {}).get("J&F", np.nan) for t in tags]) for label, s in rows]
    grouped_bars(tags, per_tag, "J&F per tag", folder / "ablation_tags.png", ylabel="J&F")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help="label=report_folder")
    parser.add_argument("--out", required=True, help="markdown file for the tables")
    parser.add_argument("--plots", required=True, help="folder for ablation_overall.png and ablation_tags.png")
    parser.add_argument("--pair", action="append", default=[], help='"A=>B": paired J&F difference of rows B - A')
    args = parser.parse_args(argv)
    try:
        rows = load_rows(args.rows)
        text = tables(rows) + (pair_table(rows, args.pair) if args.pair else "")
        with atomic_file(args.out) as f:
            f.write(text)
        plots(rows, Path(args.plots))
    except SparrowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
