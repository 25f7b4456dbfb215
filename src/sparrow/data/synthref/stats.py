"""Statistics of a SynthRef split (tags, motions, expression kinds) as a markdown table."""

from __future__ import annotations

from collections import Counter

from sparrow.data.schema import VideoRecord
from sparrow.data.synthref.expressions import KINDS
from sparrow.data.synthref.motion import MOTIONS
from sparrow.data.synthref.scene import DIFFICULTIES


def split_stats(records: list[VideoRecord]) -> dict[str, Counter]:
    """Counters: ``totals``, ``tags_expr``/``tags_video`` (difficulty tags), ``kinds``, ``motions`` (all objects),
    ``target_motions`` (objects some expression refers to), ``objects_per_video``, ``targets_per_expression``."""
    out: dict[str, Counter] = {
        k: Counter()
        for k in (
            "totals",
            "tags_expr",
            "tags_video",
            "kinds",
            "motions",
            "target_motions",
            "objects_per_video",
            "targets_per_expression",
        )
    }
    for rec in records:
        out["totals"]["videos"] += 1
        out["totals"]["objects"] += len(rec.objects)
        out["totals"]["expressions"] += len(rec.expressions)
        out["objects_per_video"][len(rec.objects)] += 1
        out["tags_video"].update(rec.tags)
        if not rec.tags:
            out["tags_video"]["(none)"] += 1
        targets = set()
        for exp in rec.expressions:
            out["tags_expr"].update(exp.tags)
            if not exp.tags:
                out["tags_expr"]["(none)"] += 1
            out["kinds"][exp.kind or "(none)"] += 1
            out["targets_per_expression"][len(exp.obj_ids)] += 1
            targets.update(exp.obj_ids)
        for obj_id, obj in rec.objects.items():
            motion = obj.attributes.get("motion", "(unknown)")
            out["motions"][motion] += 1
            if obj_id in targets:
                out["target_motions"][motion] += 1
    return out


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "-"


def format_stats(stats: dict[str, Counter]) -> str:
    """Markdown tables of :func:`split_stats`."""
    tot = stats["totals"]
    n_v, n_e, n_o = tot["videos"], tot["expressions"], tot["objects"]
    lines = [
        f"{n_v} videos, {n_o} objects, {n_e} expressions",
        "",
        "| difficulty tag | expressions | % of expressions | videos | % of videos |",
        "|---|---:|---:|---:|---:|",
    ]
    for tag in (*DIFFICULTIES, "(none)"):
        e, v = stats["tags_expr"][tag], stats["tags_video"][tag]
        lines.append(f"| {tag} | {e} | {_pct(e, n_e)} | {v} | {_pct(v, n_v)} |")
    lines += ["", "| expression kind | expressions | % |", "|---|---:|---:|"]
    for kind in KINDS:
        lines.append(f"| {kind} | {stats['kinds'][kind]} | {_pct(stats['kinds'][kind], n_e)} |")
    lines += ["", "| motion | objects | % of objects | referred objects |", "|---|---:|---:|---:|"]
    for motion in MOTIONS:
        m = stats["motions"][motion]
        lines.append(f"| {motion} | {m} | {_pct(m, n_o)} | {stats['target_motions'][motion]} |")
    lines += ["", "| objects per video | videos |", "|---:|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(stats["objects_per_video"].items())]
    lines += ["", "| targets per expression | expressions |", "|---:|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(stats["targets_per_expression"].items())]
    return "\n".join(lines) + "\n"
