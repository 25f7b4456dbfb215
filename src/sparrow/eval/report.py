"""Evaluation reports: JSON, a markdown table, CSV rows and matplotlib plots, each written atomically.

``write_report(out_dir, result)`` takes the dict returned by any runner (``evaluate_rvos``, ``evaluate_davis``,
``evaluate_refdavis``, ``evaluate_stvg``, ``evaluate_gcg``) and writes into ``out_dir``:

- ``report.json``: the whole result except the per-frame curves; ``curves.json``: the per-frame J&F curves;
- ``report.md``: the headline table, then the per-split / per-run / per-tag / per-kind tables found in the result,
  and a sentence on how missing predictions were handled;
- ``rows.csv``: one line per expression / object / video;
- ``worst_sequences.png``: per-frame J&F of the worst scored units; ``tags.png``: J&F and consistency per tag.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from sparrow.atomic import atomic_file, atomic_path
from sparrow.output import write_marker

WORST = 6


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return "" if v is None else str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _scalars(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _grouped(title: str, groups: dict[str, dict]) -> str:
    keys: list[str] = []
    for g in groups.values():
        keys += [k for k in _scalars(g) if k not in keys]
    return f"### {title}\n\n" + _table([""] + keys, [[name] + [g.get(k) for k in keys] for name, g in groups.items()])


def markdown(result: dict) -> str:
    """The markdown text of a report."""
    proto = result.get("protocol", "evaluation")
    parts = [f"# {proto} evaluation" + (f" ({result['task']})" if result.get("task") else "")]
    head = result.get("global") or result.get("summary") or {}
    scalars = _scalars(head)
    if scalars:
        parts.append(_table(list(scalars), [list(scalars.values())]))
    consistency = head.get("consistency")
    if consistency:
        parts.append("### Consistency (SPARROW)\n\n" + _table(list(consistency), [list(consistency.values())]))
    for key, title in (
        ("splits", "Per split (overall = mean of the split means)"),
        ("by_tag", "By tag"),
        ("by_kind", "By kind"),
        ("by_query_type", "By query type"),
    ):
        if head.get(key):
            parts.append(_grouped(title, head[key]))
    if result.get("runs"):
        parts.append(
            _grouped(f"Per annotation run (the headline is the mean of {len(result['runs'])} runs)", result["runs"])
        )
    policy = result.get("missing_policy")
    if policy == "zero":
        n = len(result.get("missing", {}))
        parts.append(
            f"Missing predictions: scored 0 (`--missing zero`, the MeViS/ReVOS convention); {n} unit(s) affected"
            + (": " + ", ".join(sorted(result["missing"])[:20]) if n else "")
            + "."
        )
    elif policy == "error":
        parts.append("Missing predictions: none (strict mode: a missing prediction is an error).")
    if result.get("legacy_decay_differs"):
        parts.append(
            "Decay: the legacy uint8 indexing of the DAVIS toolkit gives a different decay for: "
            + ", ".join(result["legacy_decay_differs"][:20])
            + "."
        )
    if result.get("notes"):
        parts += [f"Note: {n}" for n in result["notes"]]
    return "\n\n".join(parts) + "\n"


def _json_safe(obj: Any) -> Any:
    """NaN / inf become null (strict JSON), numpy scalars plain numbers, recursively."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _rows(result: dict) -> list[dict]:
    for key in ("expressions", "objects", "videos"):
        if result.get(key):
            return result[key]
    return []


def _plot_worst(curves: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = sorted(curves, key=lambda k: (sum(curves[k]) / max(len(curves[k]), 1), k))[:WORST]
    fig, ax = plt.subplots(figsize=(8, 4))
    for name in ranked:
        ax.plot(range(len(curves[name])), curves[name], label=name, linewidth=1.2)
    ax.set_xlabel("frame")
    ax.set_ylabel("J&F")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Per-frame J&F of the {len(ranked)} worst units")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _plot_tags(by_tag: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tags = list(by_tag)
    metrics = [m for m in ("J&F", "first_iou", "id_switch", "drift") if any(m in by_tag[t] for t in tags)]
    x = np.arange(len(tags))
    width = 0.8 / max(len(metrics), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tags)), 4))
    for i, m in enumerate(metrics):
        ax.bar(x + i * width, [by_tag[t].get(m, float("nan")) for t in tags], width, label=m)
    ax.set_xticks(x + width * (len(metrics) - 1) / 2, [f"{t}\n(n={int(by_tag[t]['n'])})" for t in tags], fontsize=8)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title("Per-tag J&F and consistency")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_report(out_dir: str | Path, result: dict) -> list[Path]:
    """Write the report files for ``result`` into ``out_dir``; returns the paths written.

    The folder gets a marker (:data:`sparrow.output.MARKER`) so that a later run may write its report there again.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    curves = result.get("curves") or {}
    body = {k: v for k, v in result.items() if k != "curves"}
    with atomic_file(out / "report.json") as f:
        json.dump(_json_safe(body), f, indent=2, allow_nan=False)
    written.append(out / "report.json")
    if curves:
        with atomic_file(out / "curves.json") as f:
            json.dump(_json_safe(curves), f, allow_nan=False)
        written.append(out / "curves.json")
    with atomic_file(out / "report.md") as f:
        f.write(markdown(result))
    written.append(out / "report.md")
    rows = _rows(result)
    if rows:
        fields: list[str] = []
        for r in rows:
            fields += [k for k in r if k not in fields and k != "curve"]
        with atomic_file(out / "rows.csv") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: _fmt(v) if isinstance(v, list) else v for k, v in r.items()})
        written.append(out / "rows.csv")
    if curves:
        _plot_worst(curves, out / "worst_sequences.png")
        written.append(out / "worst_sequences.png")
    head = result.get("summary") or {}
    if head.get("by_tag"):
        _plot_tags(head["by_tag"], out / "tags.png")
        written.append(out / "tags.png")
    write_marker(out, "eval", [p.name for p in written])  # later runs may write here again (sparrow.output)
    return written
