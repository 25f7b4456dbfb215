"""The Gradio page of ``sparrow app``: upload a video (or take the demo clip), type a query, run, look, correct, download.

Layout: inputs on the left (video, query, model, mode, key frame, self-TSF, TSF boxes, Run), results on the right
(answer, overlay video, a frame slider with the frame's masks and boxes, the key frame with the selected box and its
score, downloads). Clicking two corners on the frame view draws a TSF box on that frame (the paper's "TSF from
boxes"); the next run shows the model crops of the target from those boxes.

The Chat tab holds a conversation about the loaded video (``sparrow.pipeline.chat``): every answer with ``[SEG]``
shows its masks (overlay video and key frame), and ``chat.json`` (turns, masks, GCG entry) can be downloaded.

Every component that tests drive has an ``elem_id``. Runs go through Gradio's queue one at a time (the model is
shared); frame views are cheap and run beside them. User mistakes (no video, an unreadable or too long video, a bad
key frame or box) come back as a message on the page, never as a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from sparrow.app.models import ModelPool
from sparrow.app.render import RunFiles, describe, format_boxes, frame_view, write_run
from sparrow.app.session import SessionStore, UploadLimits, VideoView
from sparrow.atomic import atomic_file
from sparrow.checks import check_key_frame, parse_tsf_boxes
from sparrow.errors import SparrowError
from sparrow.pipeline.chat import ChatSession, ChatTurn
from sparrow.pipeline.results import SegmentationResult

MODES = ["model default", "track", "framewise", "perframe"]


@dataclass
class DemoClip:
    """A clip anyone can pick instead of uploading, with a query that refers to an object in it."""

    path: Path
    query: str


@dataclass
class SessionState:
    """What the server keeps for one browser session (Gradio ``gr.State``; never sent to the browser)."""

    view: VideoView | None = None
    result: Any = None  # the last SegmentationResult
    run: RunFiles | None = None
    corner: tuple[float, float] | None = None  # first corner of a box being drawn, original pixels
    boxes: dict[int, list[float]] = field(default_factory=dict)
    chat: ChatSession | None = None  # the conversation about ``view`` (reset with the video or the model)
    chat_key: tuple[str, str] | None = None


def _message(exc: SparrowError, view: VideoView | None) -> str:
    """The error line without server-side folders."""
    text = str(exc)
    return text.replace(str(view.path), view.path.name) if view is not None else text


def _parse_key(text: str, view: VideoView) -> int | str | None:
    """The key-frame field: empty (the model's setting), ``auto`` or a frame of the video (the CLI's checks)."""
    return check_key_frame((text or "").strip() or None, view.info.num_frames)


def _parse_boxes(text: str, view: VideoView) -> dict[int, list[float]]:
    """The TSF boxes field, one ``FRAME:X0,Y0,X1,Y1`` a line (the ``--tsf-box`` syntax and checks)."""
    lines = [line.strip() for line in (text or "").replace(";", "\n").splitlines() if line.strip()]
    return parse_tsf_boxes(lines, view.info.num_frames, (view.info.height, view.info.width)) if lines else {}


class AppHandlers:
    """The event handlers, bound to one model pool, session store and set of limits."""

    def __init__(self, pool: ModelPool, store: SessionStore, limits: UploadLimits, demo: DemoClip | None) -> None:
        self.pool, self.store, self.limits, self.demo = pool, store, limits, demo

    def _open(self, path: str, state: SessionState, session: str) -> tuple:
        view = self.store.open_video(session, path, self.limits)
        state.view, state.result, state.run, state.corner, state.boxes = view, None, None, None, {}
        self._end_chat(state)
        info = view.info
        status = f"{Path(path).name}: {info.num_frames} frames, {info.width}x{info.height}, {info.fps:.1f} fps"
        slider = gr.Slider(minimum=0, maximum=max(info.num_frames - 1, 1), value=0, step=1, interactive=True)
        return state, slider, frame_view(view, 0), status, ""

    def on_upload(self, path: str | None, state: SessionState, request: gr.Request) -> tuple:
        """A video was uploaded: check it, keep it in the session's folder, show its first frame."""
        if path is None:
            return (state, gr.Slider(), None, "", gr.Textbox())
        try:
            return self._open(path, state, request.session_hash)
        except SparrowError as exc:
            state.view, state.result, state.run = None, None, None
            gr.Warning(str(exc))
            return state, gr.Slider(value=0, maximum=1), None, f"**Not loaded:** {exc}", gr.Textbox()

    def on_demo(self, state: SessionState, request: gr.Request) -> tuple:
        """Take the demo clip: the same as uploading it, with its query filled in."""
        if self.demo is None:
            raise gr.Error("this app was started without a demo clip")
        state, slider, image, status, _ = self._open(str(self.demo.path), state, request.session_hash)
        return str(self.demo.path), self.demo.query, state, slider, image, status, ""

    def on_run(
        self,
        query: str,
        model: str,
        mode: str,
        key: str,
        self_tsf: bool,
        boxes_text: str,
        state: SessionState,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008
    ) -> tuple:
        """Segment: load the model if needed, run it with a progress bar, write the overlay and the exports."""
        view = state.view
        if view is None:
            raise gr.Error("Upload a video or pick the demo clip first.")
        if not (query or "").strip():
            raise gr.Error("Type what to find in the video.")
        try:
            key_frame = _parse_key(key, view)
            tsf_boxes = _parse_boxes(boxes_text, view) or None
            progress(0.0, desc=f"loading model {model}")
            pipeline = self.pool.get(model)
            progress(0.05, desc="segmenting")
            result = pipeline.segment(
                str(view.path),
                query.strip(),
                mode=None if mode == MODES[0] else mode,
                key_frame=key_frame,
                tsf_boxes=tsf_boxes,
                self_tsf=True if self_tsf else None,
                progress=True,
            )
            progress(0.9, desc="writing the overlay video and the downloads")
            files = write_run(result, view.path, self.store.fresh(request.session_hash, "run"), name=view.path.stem)
        except SparrowError as exc:
            raise gr.Error(_message(exc, view)) from exc
        state.result, state.run, state.corner = result, files, None
        key_t = result.targets[0].key_frame if result.targets else 0
        return (
            state,
            result.answer,
            str(files.overlay),
            gr.Slider(value=key_t),
            frame_view(view, key_t, result, state.boxes),
            frame_view(view, key_t, result),
            describe(result),
            [str(p) for p in files.downloads],
        )

    def on_frame(self, t: float, state: SessionState) -> Any:
        """The slider moved: frame ``t`` with its masks, boxes and the user's TSF box."""
        if state.view is None:
            return None
        t = int(min(max(t, 0), state.view.info.num_frames - 1))
        return frame_view(state.view, t, state.result, state.boxes, state.corner)

    def on_click(self, t: float, boxes_text: str, state: SessionState, evt: gr.SelectData) -> tuple:
        """A click on the frame view: the first click sets a corner, the second completes the frame's TSF box."""
        view = state.view
        if view is None:
            return state, None, boxes_text
        t = int(t)
        x, y = view.to_original(float(evt.index[0]), float(evt.index[1]))
        try:
            boxes = _parse_boxes(boxes_text, view)
        except SparrowError as exc:
            raise gr.Error(str(exc)) from exc
        if state.corner is None:
            state.corner = (x, y)
        else:
            (ax, ay), state.corner = state.corner, None
            if abs(x - ax) >= 2 and abs(y - ay) >= 2:
                boxes[t] = [min(ax, x), min(ay, y), max(ax, x), max(ay, y)]
        state.boxes = boxes
        return state, frame_view(view, t, state.result, boxes, state.corner), format_boxes(boxes)

    def on_clear_boxes(self, t: float, state: SessionState) -> tuple:
        state.boxes, state.corner = {}, None
        return state, self.on_frame(t, state), ""

    def _end_chat(self, state: SessionState) -> None:
        if state.chat is not None:
            state.chat.close()
        state.chat, state.chat_key = None, None

    def on_chat(
        self,
        message: str,
        masks: bool,
        model: str,
        mode: str,
        history: list,
        state: SessionState,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008
    ) -> tuple:
        """One chat turn about the loaded video; a grounded answer also shows its overlay and key frame."""
        view = state.view
        if view is None:
            raise gr.Error("Upload a video or pick the demo clip first (Segment tab).")
        if not (message or "").strip():
            raise gr.Error("Type a question.")
        try:
            key = (model, mode)
            if state.chat is None or state.chat_key != key:
                self._end_chat(state)
                progress(0.0, desc=f"loading model {model}")
                state.chat = ChatSession(self.pool.get(model), str(view.path), mode=None if mode == MODES[0] else mode)
                state.chat_key = key
                history = []
            progress(0.1, desc="answering")
            turn = state.chat.ask(message, masks=masks)
            folder = self.store.fresh(request.session_hash, "chat")
            with atomic_file(folder / "chat.json") as handle:
                json.dump(state.chat.to_json(view.path.stem), handle)
            overlay, key_image = None, None
            if turn.targets:
                progress(0.9, desc="writing the overlay video")
                result = self._turn_result(turn, state.chat)
                files = write_run(result, view.path, folder, name=view.path.stem)
                overlay = str(files.overlay)
                key_image = frame_view(view, turn.targets[0].key_frame, result)
        except SparrowError as exc:
            raise gr.Error(_message(exc, view)) from exc
        reply = turn.answer + "".join(
            f"\n\n*mask: {phrase}* (key frame {t.key_frame})" for phrase, t in zip(turn.phrases, turn.targets)
        )
        history = [*history, {"role": "user", "content": turn.question}, {"role": "assistant", "content": reply}]
        return state, history, "", overlay, key_image, str(folder / "chat.json")

    @staticmethod
    def _turn_result(turn: ChatTurn, chat: ChatSession) -> SegmentationResult:
        info = chat.video.info
        return SegmentationResult(
            query=turn.question,
            question=turn.question,
            answer=turn.answer,
            targets=turn.targets,
            vlm_frame_indices=chat.vlm_indices,
            num_frames=info.num_frames,
            height=info.height,
            width=info.width,
            fps=info.fps,
            mode=chat.mode,
            forced_prompt=turn.forced,
        )

    def on_unload(self, request: gr.Request) -> None:
        self.store.drop(request.session_hash)


def build_app(pool: ModelPool, store: SessionStore, limits: UploadLimits, demo: DemoClip | None = None) -> gr.Blocks:
    """The page (not launched). Queue and launch it with :func:`sparrow.app.server.start_app`."""
    h = AppHandlers(pool, store, limits, demo)
    with gr.Blocks(title="SPARROW", delete_cache=(1800, 3600)) as app:
        state = gr.State(SessionState())
        gr.Markdown("## SPARROW: find what a sentence refers to in a video")
        with gr.Tab("Segment"), gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(label="Video", sources=["upload"], elem_id="video-in")
                demo_button = gr.Button("Use the demo clip", elem_id="demo-clip", visible=demo is not None)
                status = gr.Markdown(elem_id="status")
                query = gr.Textbox(
                    label="What to find", placeholder="the red car that drives past the bakery", elem_id="query"
                )
                with gr.Row():
                    model = gr.Dropdown(pool.names, value=pool.names[0], label="Model", elem_id="model")
                    mode = gr.Dropdown(MODES, value=MODES[0], label="Mode", elem_id="mode")
                with gr.Row():
                    key = gr.Textbox(
                        value="", label="Key frame ('auto' or an index; empty: the model's)", elem_id="key"
                    )
                    self_tsf = gr.Checkbox(label="Self-TSF (runs twice)", elem_id="self-tsf")
                boxes = gr.Textbox(
                    label="TSF boxes: click two corners of the target on a frame (FRAME:X0,Y0,X1,Y1)",
                    lines=2,
                    elem_id="tsf-boxes",
                )
                clear = gr.Button("Clear boxes", size="sm", elem_id="clear-boxes")
                run = gr.Button("Run", variant="primary", elem_id="run")
                gr.Markdown(
                    f"Videos up to {limits.max_mb} MB, {limits.max_frames} frames and {limits.max_seconds:.0f} s."
                )
            with gr.Column(scale=2):
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
                overlay = gr.Video(label="Masks over the video", interactive=False, elem_id="overlay")
                slider = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="frame-slider")
                frame = gr.Image(
                    label="Frame: masks, boxes (white: the selected box), your TSF boxes (gold)",
                    interactive=False,
                    format="png",
                    elem_id="frame-view",
                )
                with gr.Row():
                    key_image = gr.Image(label="Key frame", interactive=False, format="png", elem_id="key-frame")
                    key_info = gr.Markdown(elem_id="key-info")
                downloads = gr.File(
                    label="Downloads (masks.zip: palette PNGs + RLE JSON)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="downloads",
                )
        with gr.Tab("Chat"), gr.Row():
            with gr.Column(scale=1):
                gr.Markdown(
                    "Questions about the video loaded in the Segment tab, with the model and mode chosen there. "
                    "Answers with [SEG] come with masks."
                )
                chatbot = gr.Chatbot(label="Conversation", elem_id="chat", height=360)
                message = gr.Textbox(label="Question", placeholder="What is moving to the left?", elem_id="chat-input")
                with gr.Row():
                    chat_masks = gr.Checkbox(label="masks for every answer", elem_id="chat-masks")
                    send = gr.Button("Ask", variant="primary", elem_id="chat-send")
                chat_file = gr.File(label="chat.json (turns, masks, GCG)", interactive=False, elem_id="chat-json")
            with gr.Column(scale=1):
                chat_overlay = gr.Video(
                    label="Masks of the last grounded answer", interactive=False, elem_id="chat-overlay"
                )
                chat_key = gr.Image(label="Its key frame", interactive=False, format="png", elem_id="chat-key-frame")

        loaded = [state, slider, frame, status, boxes]
        video.upload(h.on_upload, [video, state], loaded, concurrency_limit=4)
        demo_button.click(h.on_demo, [state], [video, query, *loaded], concurrency_limit=4)
        run.click(
            h.on_run,
            [query, model, mode, key, self_tsf, boxes, state],
            [state, answer, overlay, slider, frame, key_image, key_info, downloads],
            concurrency_limit=1,
            concurrency_id="model",
        )
        slider.change(h.on_frame, [slider, state], [frame], concurrency_limit=8, show_progress="hidden")
        frame.select(h.on_click, [slider, boxes, state], [state, frame, boxes], concurrency_limit=1)  # clicks in order
        clear.click(h.on_clear_boxes, [slider, state], [state, frame, boxes], concurrency_limit=8)
        chat_args = (
            [message, chat_masks, model, mode, chatbot, state],
            [state, chatbot, message, chat_overlay, chat_key, chat_file],
        )
        send.click(h.on_chat, *chat_args, concurrency_limit=1, concurrency_id="model")
        message.submit(h.on_chat, *chat_args, concurrency_limit=1, concurrency_id="model")
        app.unload(h.on_unload)
    return app
