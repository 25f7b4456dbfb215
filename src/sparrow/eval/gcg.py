"""Grounded caption generation (GCG): tube mIoU, grounded recall, METEOR / CIDEr, optional CLAIR.

Files (JSON), GT and prediction alike: ``{video_id: {"caption": str, "phrases": [str, ...],
"masks": [[COCO RLE or null per frame], ...]}}``: one mask tube per phrase (object), all tubes of a video the same
length and size.

- **mIoU**: per video, spatio-temporal IoU of every (predicted, GT) tube pair (Σ_t |P∩G| / Σ_t |P∪G|); greedily
  take the highest IoU, remove its row and column, while IoU > 0; mean of the matched IoUs (0 if none); mean over
  videos. Extra predictions are not penalised.
- **Recall**: the same greedy order, a pair counts if IoU ≥ 0.5 **and** phrase similarity ≥ 0.5; matches / GT
  phrases over the whole set. The phrase similarity is pluggable: the reference uses the cosine of mean-pooled
  ``bert-base-uncased`` embeddings (:func:`mean_pooled_similarity` with a local model folder); the default here is
  exact match after lower-casing (stated in the result).
- **METEOR, CIDEr**: through ``pycocoevalcap`` (optional extra ``sparrow-video[gcg]``; METEOR also needs Java) after
  removing ``<...>`` tags and ``[SEG]`` / ``[BOX]`` tokens and cutting to 2,000 characters; skipped with a note when
  the package is absent.
- **CLAIR**: an LLM judge, off unless a judge callable or an OpenAI-compatible endpoint is given; not deterministic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sparrow.data.rle import decode_rle
from sparrow.errors import SparrowError
from sparrow.eval.io import read_json_mapping

PhraseSimilarity = Callable[[str, str], float]
Judge = Callable[[str, str], float]
MAX_CAPTION_CHARS = 2000


def exact_similarity(a: str, b: str) -> float:
    """1.0 when the phrases match after lower-casing and collapsing spaces, else 0.0."""
    return float(" ".join(a.lower().split()) == " ".join(b.lower().split()))


def mean_pooled_similarity(model_dir: str | Path) -> PhraseSimilarity:
    """Cosine of mean-pooled token embeddings of a local Hugging Face encoder (the reference: bert-base-uncased)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    except OSError as exc:
        raise SparrowError(
            "no local encoder model there (download e.g. bert-base-uncased into that folder)", model_dir
        ) from exc

    @torch.no_grad()
    def embed(text: str) -> torch.Tensor:
        enc = tok(text, return_tensors="pt", truncation=True)
        hidden = model(**enc).last_hidden_state[0]  # [L, D]
        mask = enc["attention_mask"][0].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(0) / mask.sum()

    def similarity(a: str, b: str) -> float:
        return float(torch.nn.functional.cosine_similarity(embed(a), embed(b), dim=0))

    return similarity


def clean_caption(text: str) -> str:
    """Remove ``<...>`` tags and ``[SEG]`` / ``[BOX]`` tokens, collapse spaces, cut to 2,000 characters."""
    text = re.sub(r"<[^>]*>", " ", text)
    text = re.sub(r"\[(SEG|BOX)\]", " ", text)
    return " ".join(text.split())[:MAX_CAPTION_CHARS]


def _tubes(entry: dict, where: str) -> list[list[dict | None]]:
    masks = entry.get("masks")
    phrases = entry.get("phrases")
    if not isinstance(masks, list) or not isinstance(phrases, list) or len(masks) != len(phrases):
        raise SparrowError(f"{where}: need 'phrases' and 'masks' lists of the same length")
    lengths = {len(t) for t in masks}
    if len(lengths) > 1:
        raise SparrowError(f"{where}: mask tubes of different lengths {sorted(lengths)}")
    return masks


def tube_iou_matrix(pred: list[list[dict | None]], gt: list[list[dict | None]], where: str = "") -> np.ndarray:
    """Spatio-temporal IoU of every (pred, GT) tube pair → ``[P, G]`` float64; tubes are per-frame RLE lists."""
    if pred and gt and len(pred[0]) != len(gt[0]):
        raise SparrowError(f"{where}: predicted tubes have {len(pred[0])} frames, GT tubes {len(gt[0])}")
    n_frames = len(gt[0]) if gt else 0
    size = next((tuple(r["size"]) for tube in gt + pred for r in tube if r is not None), None)
    inter = np.zeros((len(pred), len(gt)))
    union = np.zeros((len(pred), len(gt)))
    for t in range(n_frames):
        pm = [
            None if tube[t] is None else decode_rle(tube[t], size, f"{where} (prediction, frame {t})") for tube in pred
        ]
        gm = [None if tube[t] is None else decode_rle(tube[t], size, f"{where} (GT, frame {t})") for tube in gt]
        for i, p in enumerate(pm):
            for j, g in enumerate(gm):
                if p is None and g is None:
                    continue
                if p is None or g is None:
                    union[i, j] += np.count_nonzero(g if p is None else p)
                    continue
                inter[i, j] += np.count_nonzero(p & g)
                union[i, j] += np.count_nonzero(p | g)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return iou


def greedy_pairs(iou: np.ndarray) -> list[tuple[int, int, float]]:
    """Greedy matching: repeatedly take the highest IoU, drop its row and column, while IoU > 0."""
    iou = iou.copy()
    pairs = []
    while iou.size and iou.max() > 0:
        i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        pairs.append((int(i), int(j), float(iou[i, j])))
        iou[i, :] = -1
        iou[:, j] = -1
    return pairs


def _caption_scores(refs: dict[str, list[str]], cands: dict[str, list[str]], notes: list[str]) -> dict[str, float]:
    try:
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError:
        notes.append("METEOR/CIDEr skipped: pycocoevalcap is not installed (pip install 'sparrow-video[gcg]')")
        return {}
    out = {"CIDEr": float(Cider().compute_score(refs, cands)[0])}
    import shutil

    if shutil.which("java") is None:
        notes.append("METEOR skipped: pycocoevalcap's METEOR needs a Java runtime on PATH")
    else:
        out["METEOR"] = float(Meteor().compute_score(refs, cands)[0])
    return out


def openai_judge(endpoint: str, model: str = "gpt-3.5-turbo", api_key_env: str = "OPENAI_API_KEY") -> Judge:
    """A CLAIR judge through an OpenAI-compatible chat endpoint (temperature 0.5, score / 100)."""
    import os
    import urllib.request

    key = os.environ.get(api_key_env)

    def judge(candidate: str, reference: str) -> float:
        prompt = (
            "You are trying to tell if a candidate set of captions is describing the same image as a reference "
            f"set of captions.\nCandidate set:\n{candidate}\nReference set:\n{reference}\nOn a precise scale "
            "from 0 to 100, how likely is it that the candidate set is describing the same image as the reference "
            'set? (JSON format, with a key "score", value between 0 and 100, and a key "reason" with a string '
            "value.)"
        )
        body = json.dumps(
            {"model": model, "temperature": 0.5, "max_tokens": 100, "messages": [{"role": "user", "content": prompt}]}
        ).encode()
        req = urllib.request.Request(
            endpoint,
            data=body,
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            reply = json.loads(resp.read())["choices"][0]["message"]["content"]
        match = re.search(r'"score"\s*:\s*([0-9.]+)', reply)
        if match is None:
            raise SparrowError(f"CLAIR judge reply has no score: {reply[:80]!r}", endpoint)
        return float(match.group(1)) / 100.0

    return judge


def evaluate_gcg(
    pred: str | Path,
    gt: str | Path,
    phrase_similarity: PhraseSimilarity | None = None,
    captions: bool = True,
    judge: Judge | None = None,
    clair_endpoint: str | None = None,
) -> dict:
    """Score GCG predictions (module doc). Every GT video needs a prediction entry (else an error listing them)."""
    gt_data = read_json_mapping(gt, "ground-truth")
    pred_data = read_json_mapping(pred, "prediction")
    lost = sorted(set(gt_data) - set(pred_data))
    if lost:
        raise SparrowError(f"{len(lost)} videos without a prediction, e.g. {lost[:5]}", pred)
    notes: list[str] = []
    if phrase_similarity is None:
        phrase_similarity = exact_similarity
        notes.append(
            "recall used exact phrase match (pass a phrase similarity, e.g. mean-pooled bert-base-uncased, "
            "for the reference figure)"
        )
    if judge is None and clair_endpoint:
        judge = openai_judge(clair_endpoint)
    rows = []
    matched_total, gt_phrases = 0, 0
    refs, cands = {}, {}
    for vid in sorted(gt_data):
        g, p = gt_data[vid], pred_data[vid]
        g_tubes = _tubes(g, f"{gt} (video {vid})")
        p_tubes = _tubes(p, f"{pred} (video {vid})")
        iou = tube_iou_matrix(p_tubes, g_tubes, f"video {vid}")
        pairs = greedy_pairs(iou)
        miou = float(np.mean([v for _, _, v in pairs])) if pairs else 0.0
        hits = sum(1 for i, j, v in pairs if v >= 0.5 and phrase_similarity(p["phrases"][i], g["phrases"][j]) >= 0.5)
        matched_total += hits
        gt_phrases += len(g_tubes)
        refs[vid] = [clean_caption(str(g.get("caption", "")))]
        cands[vid] = [clean_caption(str(p.get("caption", "")))]
        rows.append({"video": vid, "mIoU": miou, "matched": hits, "gt_phrases": len(g_tubes)})
    summary: dict[str, Any] = {
        "n": len(rows),
        "mIoU": float(np.mean([r["mIoU"] for r in rows])),
        "Recall": matched_total / gt_phrases if gt_phrases else 0.0,
    }
    if captions:
        summary.update(_caption_scores(refs, cands, notes))
    if judge is not None:
        summary["CLAIR"] = float(np.mean([judge(cands[v][0], refs[v][0]) for v in sorted(refs)]))
        notes.append("CLAIR comes from an LLM judge and is not deterministic")
    else:
        notes.append("CLAIR off (no judge configured)")
    return {"protocol": "gcg", "global": summary, "videos": rows, "notes": notes}
