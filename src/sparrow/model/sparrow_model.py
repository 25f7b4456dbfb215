"""SparrowModel: the VLM adapter, the two L->V heads, the proposer, the selector and SAM2, composed.

Training (``forward``) and inference (the pipeline layer, ``sparrow.pipeline``) share every module:

    frames --VLM (+question, + TSF crops)--> hidden states at [BOX], [SEG] --heads--> e_box, e_seg  [N, C]
    SAM frame --SAM2 encoder--> features --proposer--> P boxes + features --selector(e_box)--> box
      (selection_level "track": the VLM frames' proposals --link--> tracklets --track selector(e_box)--> one
       tracklet, whose box on a frame is the box)
    features + box corners + e_seg --SAM2 mask decoder--> mask logits  [S/4, S/4] -> upsampled [H, W]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import masks_to_boxes

from sparrow.errors import SparrowError
from sparrow.model.config import SparrowConfig
from sparrow.model.heads import LanguageToVisionHead
from sparrow.model.losses import mask_bce_loss, mask_dice_loss, weighted_total
from sparrow.model.pixel_decoder import DecoderOutput, ImageFeatures, PixelDecoder
from sparrow.model.prompt_tokens import PromptPairs, gather_states, teacher_forced_pairs
from sparrow.model.proposal_appearance import appearance_dim, proposal_appearance, proposal_silhouettes
from sparrow.model.proposer import Proposals, Proposer, ProposerConfig, proposer_loss
from sparrow.model.sam2_backbone import Sam2Preprocessor
from sparrow.model.sam2_vision import set_vlm_vision
from sparrow.model.selector import (
    Selector,
    SelectorOutput,
    ranking_loss,
    refinement_loss,
    select_boxes,
    selection_labels,
    selection_loss,
)
from sparrow.model.track_selector import TrackSelector, track_selection_loss
from sparrow.model.tracklets import (
    Tracklets,
    link_proposals,
    suppress_duplicates,
    tracklet_appearance,
    tracklet_hits,
    tracklet_labels,
    trajectory_dim,
    trajectory_features,
)
from sparrow.model.vlm_qwen2_5 import QwenVLAdapter, VLMBatch


@dataclass
class SparrowBatch:
    """A training batch.

    ``sam_pixels`` ``[B, Ts, 3, S, S]`` (SAM2-normalised); ``masks`` float ``[B, N, Ts, H, W]`` (N target slots,
    each answered by one ``[BOX] [SEG]``); ``boxes`` ``[B, N, Ts, 4]`` normalised xyxy, NaN where the target is
    absent; ``object_boxes`` per image (``B*Ts`` tensors ``[M, 4]``, normalised) of every annotated object, for the
    class-agnostic proposer loss (None: the target boxes are used).
    """

    vlm: VLMBatch
    sam_pixels: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    object_boxes: list[torch.Tensor] | None = None
    identity_ids: torch.Tensor | None = (
        None  # [B, M] int64 identity of each slot, -1 padding (segmenter identity prompts)
    )
    identity_masks: torch.Tensor | None = None  # [B, M, Ts, H, W] float: that identity's masks on the SAM frames
    target_identity: torch.Tensor | None = None  # [B] int64 identity of the expression's targets, -1 mixed
    track_pixels: torch.Tensor | None = None  # [B, Tv, 3, S, S] the VLM frames for SAM2 (selection_level "track")
    track_boxes: torch.Tensor | None = None  # [B, N, Tv, 4] normalised target boxes on those frames, NaN absent
    questions: list[str] | None = None  # each sample's question (a track selector that reads it)

    def to(self, device: torch.device | str) -> SparrowBatch:
        move = lambda t: None if t is None else t.to(device)
        return SparrowBatch(
            vlm=self.vlm.to(device),
            sam_pixels=self.sam_pixels.to(device),
            masks=self.masks.to(device),
            boxes=self.boxes.to(device),
            object_boxes=None if self.object_boxes is None else [b.to(device) for b in self.object_boxes],
            identity_ids=move(self.identity_ids),
            identity_masks=move(self.identity_masks),
            target_identity=move(self.target_identity),
            track_pixels=move(self.track_pixels),
            track_boxes=move(self.track_boxes),
            questions=self.questions,
        )


@dataclass
class PromptEmbeddings:
    """Projected prompts of the targets of one answer: ``box`` / ``seg`` ``[N, C]``, ``has_box`` ``[N]`` bool; for a
    track selector that reads the question (``config.track_reads_question``) also the question's token embeddings
    ``words [N, L, d]`` and ``word_mask [N, L]`` (the same question for every target of the answer)."""

    box: torch.Tensor
    seg: torch.Tensor
    has_box: torch.Tensor
    words: torch.Tensor | None = None
    word_mask: torch.Tensor | None = None


class SparrowModel(nn.Module):
    """The SPARROW network. Build with :func:`sparrow.model.loading.build_model`, load with
    :func:`sparrow.model.loading.from_pretrained`; videos go through :class:`sparrow.pipeline.SegmentationPipeline`."""

    def __init__(self, config: SparrowConfig, vlm: QwenVLAdapter, sam: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.vlm = vlm
        self.pixel_decoder = PixelDecoder(sam)
        d_llm, d_sam = vlm.hidden_size, self.pixel_decoder.hidden_size
        self.box_head = LanguageToVisionHead(d_llm, d_sam)
        self.seg_head = LanguageToVisionHead(d_llm, d_sam)
        self.proposer = Proposer(
            ProposerConfig(
                in_channels=d_sam,
                hidden_size=config.proposer_hidden,
                num_queries=config.proposer_queries,
                num_layers=config.proposer_layers,
                num_heads=config.proposer_heads,
                top_k=config.selection.top_k,
                two_stage=config.proposer_two_stage,
                fine_channels=self._fine_channels(config, sam),
            )
        )
        self.selector = Selector(
            embed_dim=d_sam,
            feature_dim=config.proposer_hidden,
            appearance_dim=appearance_dim(d_sam, config.selector_appearance_grid) if config.selector_appearance else 0,
        )
        self.preprocessor = Sam2Preprocessor(self.pixel_decoder.image_size)
        # Learned identity prompts (config.identity_prompts rows of SAM2's prompt width): the segmenter stage decodes
        # "every object of identity i" from row i in place of [SEG] (train/objectives.py), so SAM2 learns to tell them apart.
        self.identity_prompts = nn.Embedding(config.identity_prompts, d_sam) if config.identity_prompts else None
        # vlm_vision "sam2": the VLM's vision tokens come from this model's SAM2 encoder (held by reference, frozen)
        # through a projector that replaces Qwen's tower (model/sam2_vision.py); built last so the RNG stream of the
        # parts above does not depend on it.
        set_vlm_vision(vlm, self.pixel_decoder, config.vlm_vision)
        self.track_selector = make_track_selector(config, d_sam, d_llm)

    @staticmethod
    def _fine_channels(config: SparrowConfig, sam: nn.Module) -> int:
        """Channels of SAM2's stride-8 map after the mask decoder's ``conv_s1`` (hidden / 4) when the proposer reads it."""
        return int(sam.config.vision_config.fpn_hidden_size) // 4 if config.proposer_fine else 0

    @property
    def sam(self) -> nn.Module:
        return self.pixel_decoder.sam

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------------------------------ pieces
    def prompt_embeddings(
        self, states: torch.Tensor, pairs: PromptPairs, question: str | None = None
    ) -> PromptEmbeddings:
        """States ``[L, d]`` of one sequence and its pairs -> projected ``[BOX]``/``[SEG]`` embeddings ``[N, C]``;
        ``question`` (the last user turn as the VLM read it) is needed when the track selector reads it."""
        seg_states, _ = gather_states(states, pairs.seg_positions)
        box_states, has_box = gather_states(states, pairs.box_positions)
        words = word_mask = None
        if self.config.track_reads_question:
            if question is None:
                raise ValueError("this model's track selector reads the question: pass it to prompt_embeddings")
            words, word_mask = self.vlm.question_embeddings([question])
            words, word_mask = words.expand(len(seg_states), -1, -1), word_mask.expand(len(seg_states), -1)
        return PromptEmbeddings(
            box=self.box_head(box_states),
            seg=self.seg_head(seg_states),
            has_box=has_box,
            words=words,
            word_mask=word_mask,
        )

    def propose(self, features: ImageFeatures) -> Proposals:
        """All proposals of a batch of frames (``[B, Q, ...]``)."""
        return self.proposer(features.embedding, features.high_res[-1] if self.config.proposer_fine else None)

    def candidates(self, features: ImageFeatures) -> Proposals:
        """The top-k proposals of every frame of a feature batch, with their appearance when the selector uses it."""
        return self._top_candidates(self.propose(features), features)

    def _top_candidates(self, proposals: Proposals, features: ImageFeatures) -> Proposals:
        top = self.proposer.top_proposals(proposals)
        if self.config.selector_appearance:
            top.appearance = proposal_appearance(
                [features.embedding, *features.high_res], top.boxes.detach(), grid=self.config.selector_appearance_grid
            )
        return top

    def select(self, box_embedding: torch.Tensor, top: Proposals, index: int) -> SelectorOutput:
        """Score the (top-k) proposals of frame ``index`` of a proposal batch for embeddings ``[N, C]``."""
        return self.selector(box_embedding, frame_proposals(top, index))

    def mask_boxes(self, features: ImageFeatures, top: Proposals) -> Proposals:
        """The top-k proposals ``[T, k, ...]`` of a feature batch with each box replaced by the box of the mask SAM2
        decodes from it (no ``[SEG]``), and their appearance recomputed in the new boxes; a box whose mask is empty,
        or lies inside a likelier proposal's mask (``tracklets.suppress_duplicates``), becomes invalid. The
        proposer's boxes are loose (on SynthRef the best one overlaps an object by IoU 0.64 on average); SAM2's
        box-prompted masks are tight, so duplicates of one object collapse onto one box and link into one tracklet,
        and the mask-level suppression drops the partial masks that box NMS keeps. With ``config.track_silhouette``
        each proposal also keeps its mask inside the new box (``proposal_silhouettes``, ``[T, k, s * s]``)."""
        t, k = top.boxes.shape[:2]
        frames = torch.arange(t, device=top.boxes.device).repeat_interleave(k)
        logits = self.decode(features, frames, None, top.boxes.flatten(0, 1)).mask_logits  # [T*k, h, w]
        masks = logits > 0
        nonempty = masks.flatten(1).any(1)
        h, w = masks.shape[-2:]
        pixel = masks_to_boxes(masks[nonempty]).to(top.boxes.dtype)  # inclusive pixel corners
        scale = torch.tensor([w, h, w, h], dtype=pixel.dtype, device=pixel.device)
        boxes = top.boxes.flatten(0, 1).clone()
        boxes[nonempty] = (pixel + torch.tensor([0, 0, 1, 1], dtype=pixel.dtype, device=pixel.device)) / scale
        boxes = boxes.view(t, k, 4)
        appearance = None
        if top.appearance is not None:
            maps = [features.embedding, *features.high_res]
            appearance = proposal_appearance(maps, boxes, grid=self.config.selector_appearance_grid)
        silhouette = None
        if self.config.track_silhouette:
            size = self.config.track_silhouette
            silhouette = proposal_silhouettes(logits, boxes.flatten(0, 1), size).view(t, k, size * size)
        valid = suppress_duplicates(masks.view(t, k, h, w), top.logits, top.valid & nonempty.view(t, k))
        return Proposals(boxes, top.logits, top.features, valid, appearance=appearance, silhouette=silhouette)

    def clip_tracklets(
        self,
        box_embeddings: torch.Tensor,
        features: ImageFeatures,
        words: torch.Tensor | None = None,
        word_mask: torch.Tensor | None = None,
    ) -> tuple[Tracklets, torch.Tensor]:
        """The tracklets of one clip's frames (a feature batch ``[T, ...]``, ``T = config.vlm_frames`` frames in time
        order) and their logits ``[Q, N]`` for ``[BOX]`` embeddings ``[Q, C]``: top-k proposals, tightened by
        :meth:`mask_boxes`, linked and scored (:meth:`tracklet_logits`)."""
        top = self.mask_boxes(features, self.candidates(features))
        return self.tracklet_logits(box_embeddings, top, words, word_mask)

    def tracklet_logits(
        self,
        box_embeddings: torch.Tensor,
        top: Proposals,
        words: torch.Tensor | None = None,
        word_mask: torch.Tensor | None = None,
    ) -> tuple[Tracklets, torch.Tensor]:
        """Link one clip's top-k proposals (``[T, k, ...]`` with appearance, ``T = config.vlm_frames`` frames in time
        order) into tracklets and score them for ``[BOX]`` embeddings ``[Q, C]`` -> ``(tracklets, logits [Q, N])``;
        ``words [Q, L, d]`` / ``word_mask [Q, L]``: the question's token embeddings (``PromptEmbeddings``), for a
        selector that reads them."""
        if self.track_selector is None:
            raise SparrowError("this model selects per frame (selection_level 'frame'); it has no track selector")
        if trajectory_dim(top.boxes.shape[0]) != self.track_selector.trajectory_dim:
            raise SparrowError(
                f"this model's track selector was built for {self.track_selector.frames} VLM frames; "
                f"got {top.boxes.shape[0]} (keep vlm_frames at {self.track_selector.frames})"
            )
        tracks, appearance, trajectory = self.link_tracklets(top)
        return tracks, self.track_selector(box_embeddings, appearance, trajectory, words, word_mask)

    def link_tracklets(self, top: Proposals) -> tuple[Tracklets, torch.Tensor, torch.Tensor]:
        """Link one clip's top-k proposals (``[T, k, ...]`` with appearance, frames in time order) into tracklets, as
        selection sees them: ``(tracklets, appearance [N, A (+ s * s)], trajectory [N, 5 T + 8])``; the appearance
        is the mean key over the tracklet's frames, followed, with ``config.track_silhouette``, by its mean
        silhouette (from :meth:`mask_boxes`)."""
        if top.appearance is None:
            raise ValueError("track selection needs the proposals' appearance (SparrowModel.candidates)")
        if self.config.track_silhouette and top.silhouette is None:
            raise ValueError("this track selector needs the proposals' silhouettes (SparrowModel.mask_boxes)")
        tracks = link_proposals(top.boxes, top.logits, top.valid, appearance=top.appearance)
        appearance = tracklet_appearance(tracks, top.appearance)
        if self.config.track_silhouette:
            appearance = torch.cat([appearance, tracklet_appearance(tracks, top.silhouette.to(appearance))], -1)
        return tracks, appearance, trajectory_features(tracks)

    def decode(
        self, features: ImageFeatures, frame_index: torch.Tensor, seg: torch.Tensor | None, boxes: torch.Tensor | None
    ) -> DecoderOutput:
        """Decode masks for prompts on frames ``frame_index`` ``[M]`` of a feature batch; seg ``[M, C]``, boxes ``[M, 4]``."""
        picked = ImageFeatures(
            embedding=features.embedding[frame_index], high_res=[h[frame_index] for h in features.high_res]
        )
        return self.pixel_decoder.decode(picked, seg, boxes)

    # ------------------------------------------------------------------------------------------ training
    def forward(self, batch: SparrowBatch, train_proposer: bool = False) -> dict[str, torch.Tensor]:
        """Training losses: ``ce``, ``mask_bce``, ``mask_dice``, ``selection``, ``box``, ``selection_rank`` (frames
        with a positive proposal; weight 0 unless set), ``prompt_identity`` (batches with SynthRef target identities
        on a model with identity prompts, :meth:`_prompt_identity_loss`), ``track_selection`` (a model with a track
        selector and a batch with ``track_pixels``, :meth:`_track_selection_loss`) (+ ``proposer``) and ``loss``
        (their weighted sum, weights from ``config.loss``)."""
        cfg = self.config
        ce, hidden = self.vlm(batch.vlm)
        pairs = teacher_forced_pairs(
            batch.vlm.input_ids, batch.vlm.attention_mask, self.vlm.box_token_id, self.vlm.seg_token_id
        )
        b, n, ts = batch.masks.shape[:3]
        for row, p in enumerate(pairs):
            if len(p) != n:
                raise SparrowError(f"sample {row}: the answer has {len(p)} [SEG] tokens for {n} target slots")
        questions = batch.questions or [None] * len(pairs)
        prompts = [self.prompt_embeddings(hidden[row, :-1], p, questions[row]) for row, p in enumerate(pairs)]

        features = self.pixel_decoder.encode(batch.sam_pixels.flatten(0, 1))  # frames ordered (b, t)
        proposals = self.propose(features)
        top = self._top_candidates(proposals, features)
        losses: dict[str, torch.Tensor] = {}
        if ce is not None:
            losses["ce"] = ce
        if train_proposer:
            targets = batch.object_boxes or [
                bx[~torch.isnan(bx).any(-1)] for bx in batch.boxes.permute(0, 2, 1, 3).flatten(0, 1)
            ]
            losses["proposer"] = proposer_loss(proposals, targets)["total"]

        sel_losses, box_losses, rank_losses = [], [], []
        frame_idx, segs, boxes, has_box = [], [], [], []
        for row in range(b):
            for slot in range(n):
                for t in range(ts):
                    f = row * ts + t
                    target = batch.boxes[row, slot, t]
                    present = not bool(torch.isnan(target).any())
                    box = None
                    if bool(prompts[row].has_box[slot]):
                        frame_props = frame_proposals(top, f)
                        out = self.selector(prompts[row].box[slot : slot + 1], frame_props)
                        if present:
                            labels = selection_labels(
                                frame_props.boxes[0], target, cfg.selection.pos_iou, cfg.selection.neg_iou
                            )
                            box_losses.append(refinement_loss(out.refined_boxes[0], labels, target))
                        else:
                            labels = torch.zeros_like(out.logits[0])
                        labels = torch.where(frame_props.valid[0], labels, torch.full_like(labels, -1.0))
                        sel_losses.append(selection_loss(out.logits[0], labels))
                        if present and bool((labels > 0.5).any()):
                            rank_losses.append(ranking_loss(out.logits[0], labels))
                        if present:
                            if cfg.train_box_source == "gt":
                                box = target
                            else:
                                _, chosen = select_boxes(out, cfg.selection.threshold, 1)
                                box = chosen[0][0].detach()
                    frame_idx.append(f)
                    segs.append(prompts[row].seg[slot])
                    boxes.append(box if box is not None else torch.zeros(4, device=hidden.device))
                    has_box.append(box is not None)
        decoded = self._decode_mixed(
            features,
            torch.tensor(frame_idx, device=hidden.device),
            torch.stack(segs),
            torch.stack(boxes),
            torch.tensor(has_box),
        )
        h, w = batch.masks.shape[-2:]
        logits = PixelDecoder.upsample(decoded, (h, w))
        targets = batch.masks.flatten(0, 2).to(logits.dtype)  # (b, n, t) order == loop order
        losses["mask_bce"] = mask_bce_loss(logits, targets)
        losses["mask_dice"] = mask_dice_loss(logits, targets)
        if sel_losses:
            losses["selection"] = torch.stack(sel_losses).mean()
        if box_losses:
            losses["box"] = torch.stack(box_losses).mean()
        if rank_losses:
            losses["selection_rank"] = torch.stack(rank_losses).mean()
        if self.track_selector is not None and batch.track_pixels is not None and batch.track_boxes is not None:
            losses["track_selection"] = self._track_selection_loss(prompts, batch.track_pixels, batch.track_boxes)
        if batch.target_identity is not None and self.identity_prompts is not None:
            losses["prompt_identity"] = self._prompt_identity_loss(prompts, batch.target_identity.to(hidden.device))
        losses["loss"] = weighted_total(losses, cfg.loss)
        return losses

    def _track_selection_loss(
        self, prompts: list[PromptEmbeddings], pixels: torch.Tensor, target_boxes: torch.Tensor
    ) -> torch.Tensor:
        """:func:`track_selection_loss` of each answer's ``[BOX]`` embeddings over its clip's tracklets, averaged over
        the answers: ``pixels [B, Tv, 3, S, S]`` the VLM frames, ``target_boxes [B, N, Tv, 4]`` (NaN absent). SAM2 and
        the proposer run without gradients here: the tracklets are a discrete choice on frozen features."""
        b, tv = pixels.shape[:2]
        with torch.no_grad():
            features = self.pixel_decoder.encode(pixels.flatten(0, 1))
            top = self.mask_boxes(features, self.candidates(features))
        terms = []
        for row in range(b):
            slots = torch.nonzero(prompts[row].has_box).flatten()
            if len(slots) == 0:
                continue
            words, word_mask = prompts[row].words, prompts[row].word_mask
            tracks, logits = self.tracklet_logits(
                prompts[row].box[slots],
                top.images(row * tv, (row + 1) * tv),
                None if words is None else words[slots],
                None if word_mask is None else word_mask[slots],
            )
            labels = [tracklet_labels(tracklet_hits(tracks, target_boxes[row, int(s)])) for s in slots]
            positive, ignore = (torch.stack(part) for part in zip(*labels))
            terms.append(track_selection_loss(logits, positive, ignore))
        if not terms:
            return prompts[0].seg.sum() * 0.0
        return torch.stack(terms).mean()

    def _prompt_identity_loss(self, prompts: list[PromptEmbeddings], target_identity: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the ``[BOX]`` and ``[SEG]`` embeddings ``[N, C]`` of each answer against the frozen
        identity prompts ``E [I, C]`` (logits ``e . E^T / sqrt(C)``), the class being the expression's target identity
        ``target_identity [B]`` (-1: left out). Deep supervision for SynthRef training: the embeddings must name the
        object the sentence refers to in the terms the segmenter learned (``stage.identity_prompts``); 0 when no row
        has an identity."""
        table = self.identity_prompts.weight.detach()
        rows = [r for r in range(len(prompts)) if int(target_identity[r]) >= 0]
        if not rows:
            return prompts[0].seg.sum() * 0.0
        embeds = torch.cat([torch.cat([prompts[r].box[prompts[r].has_box], prompts[r].seg]) for r in rows])
        labels = torch.cat(
            [target_identity[r].repeat(int(prompts[r].has_box.sum()) + len(prompts[r].seg)) for r in rows]
        )
        logits = embeds @ table.t().to(embeds.dtype) / table.shape[1] ** 0.5
        return F.cross_entropy(logits, labels)

    def _decode_mixed(
        self,
        features: ImageFeatures,
        frame_idx: torch.Tensor,
        segs: torch.Tensor,
        boxes: torch.Tensor,
        has_box: torch.Tensor,
    ) -> torch.Tensor:
        """Decode prompts with and without boxes in two calls; returns low-res logits ``[M, S/4, S/4]`` in input order."""
        out = None
        for flag in (True, False):
            sel = (has_box == flag).nonzero().flatten()
            if len(sel) == 0:
                continue
            res = self.decode(features, frame_idx[sel], segs[sel], boxes[sel] if flag else None).mask_logits
            if out is None:
                out = res.new_zeros((len(frame_idx),) + tuple(res.shape[1:]))
            out = out.index_copy(0, sel.to(out.device), res)
        return out


def make_track_selector(config: SparrowConfig, sam_hidden: int, question_dim: int) -> TrackSelector | None:
    """A fresh track selector for ``config`` (``selection_level "track"``; None otherwise): ``[BOX]`` embeddings and
    appearance keys of SAM2's width ``sam_hidden``, trajectories over ``config.vlm_frames`` frames, and (with
    ``config.track_reads_question``) a reader of question token embeddings of width ``question_dim``, and (with
    ``config.track_silhouette``) a branch for the tracklets' silhouettes."""
    if config.selection_level != "track":
        return None
    return TrackSelector(
        embed_dim=sam_hidden,
        appearance_dim=appearance_dim(sam_hidden, config.selector_appearance_grid),
        trajectory_dim=trajectory_dim(config.vlm_frames),
        hidden=config.track_hidden,
        question_dim=question_dim if config.track_reads_question else 0,
        silhouette_dim=config.track_silhouette**2,
    )


def frame_proposals(proposals: Proposals, index: int) -> Proposals:
    """The proposals of one frame of a batch, keeping a batch dimension of 1."""
    return proposals.image(index)
