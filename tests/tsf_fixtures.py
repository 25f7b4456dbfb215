"""Synthetic data and tiny random models for the TSF tests (no download, CPU, seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparrow.data.schema import Expression, ObjectTrack, VideoRecord


def moving_square(
    T: int = 12,
    H: int = 72,
    W: int = 120,
    side: int = 18,
    seed: int = 0,
    colour=(230, 40, 40),
    step=(5, 2),
    start=(10, 12),
):
    """Frames ``[T, H, W, 3]`` uint8 of a square moving over a fixed textured background, and its boxes per frame."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 90, size=(H, W, 3), dtype=np.uint8)
    frames, boxes = [], []
    for t in range(T):
        x0 = min(start[0] + step[0] * t, W - side)
        y0 = min(start[1] + step[1] * t, H - side)
        f = background.copy()
        f[y0 : y0 + side, x0 : x0 + side] = colour
        frames.append(f)
        boxes.append([float(x0), float(y0), float(x0 + side), float(y0 + side)])
    return np.stack(frames), boxes


def synthetic_records(n_videos: int = 3, T: int = 10, H: int = 64, W: int = 96, seed: int = 0):
    """Records (two objects, two expressions each) and their frames: ``[(VideoRecord, frames [T, H, W, 3])]``."""
    out = []
    for v in range(n_videos):
        rng = np.random.default_rng(seed + v)
        frames = rng.integers(0, 60, size=(T, H, W, 3), dtype=np.uint8)
        objects = {}
        for o, (colour, start, step) in enumerate(
            [((220, 30, 30), (4, 6), (4, 1)), ((30, 200, 40), (70, 30), (-3, 1))]
        ):
            masks = np.zeros((T, H, W), dtype=bool)
            for t in range(T):
                x0 = int(np.clip(start[0] + step[0] * t, 0, W - 14))
                y0 = int(np.clip(start[1] + step[1] * t, 0, H - 14))
                masks[t, y0 : y0 + 14, x0 : x0 + 14] = True
                frames[t][masks[t]] = colour
            obj_id = 100 * v + o + 1
            objects[obj_id] = ObjectTrack.from_masks(obj_id, masks, category="square")
        ids = list(objects)
        exps = [Expression("0", "the red square", [ids[0]]), Expression("1", "the green square moving left", [ids[1]])]
        frame_names = [f"{t:05d}" for t in range(T)]
        rec = VideoRecord(video_id=f"vid{v}", frames=frame_names, height=H, width=W, objects=objects, expressions=exps)
        out.append((rec, frames))
    return out


def write_mevis_fixture(root: Path, n_videos: int = 3, T: int = 10, seed: int = 0) -> Path:
    """A MeViS-layout split folder of moving squares; returns the split folder."""
    from sparrow.data.mevis import write_frames, write_mevis_annotations

    split = Path(root) / "train"
    pairs = synthetic_records(n_videos=n_videos, T=T, seed=seed)
    write_mevis_annotations([r for r, _ in pairs], split)
    for rec, frames in pairs:
        write_frames(split / "JPEGImages" / rec.video_id, rec.frames, frames)
    return split


def tiny_sam2_video(path: Path):
    """Save a tiny random ``Sam2VideoModel`` to ``path`` and return it."""
    import torch

    from sparrow.model.sam2_backbone import build_sam2, tiny_sam2_config

    torch.manual_seed(0)
    model = build_sam2(tiny_sam2_config(64)).eval()
    model.save_pretrained(path)
    return model


def tiny_grounding_dino(path: Path) -> Path:
    """Save a tiny random GroundingDINO + processor (offline WordPiece tokenizer) to ``path``."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        ResNetConfig,
    )

    torch.manual_seed(0)
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tk.train_from_iterator(
        ["the red square", "the green square moving left", "a person. a car."],
        trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials),
    )
    cls, sep = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok = BertTokenizerFast(
        tokenizer_object=tk,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    cfg = GroundingDinoConfig(
        use_timm_backbone=False,
        backbone_config=ResNetConfig(
            hidden_sizes=[16, 32, 64, 128],
            depths=[1, 1, 1, 1],
            layer_type="basic",
            out_features=["stage2", "stage3", "stage4"],
        ),
        text_config=BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        ),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=10,
        max_text_len=32,
        num_feature_levels=4,
    )
    GroundingDinoForObjectDetection(cfg).save_pretrained(path)
    GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}), tokenizer=tok
    ).save_pretrained(path)
    return Path(path)
