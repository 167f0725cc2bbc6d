"""Serving a course checkpoint over HTTP: an OpenAI-compatible chat API (text and image parts, streaming), the
upload endpoint `POST /v1/generate-multipart`, and a one-file web page at `/`.

    engine = Engine.load("runs/vlm_sft")          # or any text-only GPT checkpoint: runs/sft, runs/pretrain
    uvicorn.run(make_app(engine), host="127.0.0.1", port=8000)     # what serve.py does

One model, one CPU: generation runs behind a lock, so concurrent requests wait their turn and none sees another's
tokens. Streaming goes from the generating thread to the event loop through an asyncio queue. Every bad input is a
4xx in OpenAI's error shape ({"error": {"message", "type", "param", "code"}}); nothing is fetched from the
network (images come only as data: URLs or uploads) and nothing is written to disk.
"""
import asyncio
import base64
import binascii
import io
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Union

import torch
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser

from common import RUNS_DIR
from common.errors import CourseError
from step2_gpt.model import GPT_STEPS, load_gpt
from step2_gpt.stream import TextStreamer
from step6_vlm.chat import generate_reply, prepare_prompt, prompt_ids
from step6_vlm.data import decode_image
from step6_vlm.model import load_vlm

VLM_STEPS = ("vlm_sft", "vlm_pretrain")
MAX_IMAGE_BYTES = 8 * 1024 * 1024   # one picture, decoded; a photo is a few MB, the world's pictures a few KB
DEFAULT_MAX_TOKENS = 256            # clipped to what the context has room for
PAGE = Path(__file__).resolve().parent / "static" / "index.html"
# Uploads up to the image limit stay in memory (Starlette spools larger parts to a temporary file).
MultiPartParser.spool_max_size = MAX_IMAGE_BYTES + 1


class APIError(Exception):
    """A refused request: `status` and OpenAI's error fields."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


def error_response(status: int, message: str, param=None, code=None, kind="invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


# ----------------------------------------------------------------------------------------------------
# Requests (the subset of OpenAI's chat format the course's models can honour; unknown fields are ignored)


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: dict | None = None
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)   # the newer name of max_tokens
    temperature: float = Field(0.0, ge=0, le=2)   # 0 (greedy) unless asked: the same question, the same answer
    top_p: float | None = Field(None, gt=0, le=1)


# ----------------------------------------------------------------------------------------------------
# The engine: one loaded model, generation behind a lock


@dataclass
class Job:
    ids: list                 # the prompt, images expanded
    images: list              # PIL images, one per <image>
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float | None = None


@dataclass
class Reply:
    text: str
    finish_reason: str        # "stop" (the model ended its turn) or "length" (max_tokens or the context ran out)
    prompt_tokens: int
    completion_tokens: int


class Cancelled(Exception):
    """The client went away: stop generating for it."""


@dataclass
class Engine:
    model: torch.nn.Module    # a step-6 VLM, or a step-2 GPT for text-only chat
    tok: object
    name: str
    processor: object = None  # the VLM's image processor
    lock: threading.Lock = field(default_factory=threading.Lock)
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def load(cls, path, device="cpu") -> "Engine":
        """Any course checkpoint folder: a VLM (vlm_sft, vlm_pretrain) or a text-only GPT (GPT_STEPS)."""
        path = Path(path)
        if checkpoint_step(path) in GPT_STEPS:
            model, tok, _ = load_gpt(path, expect_steps=GPT_STEPS, device=device)
            return cls(model, tok, path.name)
        from step6_vlm.vision import load_image_processor
        vlm, tok, _ = load_vlm(path, device)   # also says what is missing or of the wrong step, and what makes it
        return cls(vlm, tok, path.name, load_image_processor(vlm.config.vision_encoder))

    @property
    def vision(self) -> bool:
        return self.processor is not None

    @property
    def block_size(self) -> int:
        return (self.model.llm if self.vision else self.model).config.block_size

    def job(self, messages: list, images=(), max_tokens=None, temperature=0.0, top_p=None) -> Job:
        """Plain messages (the user turns with one <image> per picture) → a checked Job, or an APIError."""
        if max_tokens is not None and max_tokens > self.block_size:
            raise APIError(f"max_tokens is {max_tokens}, more than the model's whole context of {self.block_size}",
                           "max_tokens", "invalid_value")
        try:
            ids = (prompt_ids(self.model, self.tok, messages) if self.vision
                   else self.tok.render_conversation(messages, add_generation_prompt=True)[0])
        except CourseError as e:
            raise APIError(str(e), "messages", "context_length_exceeded" if "context" in str(e) else None) from None
        if len(ids) >= self.block_size:
            raise APIError(f"the conversation needs {len(ids)} positions, the model's context is {self.block_size}; "
                           "no room is left for an answer: shorten it", "messages", "context_length_exceeded")
        room = self.block_size - len(ids)
        return Job(ids, list(images), min(max_tokens or DEFAULT_MAX_TOKENS, room), temperature, top_p)

    def run(self, job: Job, write=None, cancelled: threading.Event | None = None) -> Reply:
        """Generate one answer (waits for the lock); `write(text)` gets it in whole characters as it grows."""
        stop_ids = (self.tok.im_end_id, self.tok.eos_id)
        stream = TextStreamer(self.tok, write, stop_ids=stop_ids)

        def on_token(t):
            if cancelled is not None and cancelled.is_set():
                raise Cancelled
            stream(t)

        with self.lock:
            if self.vision:
                from step6_vlm.vision import preprocess
                pv = preprocess(self.processor, job.images) if job.images else None   # (N, 3, H, W)
                dev = next(self.model.parameters()).device
                new = generate_reply(self.model, self.tok, job.ids, None if pv is None else pv.to(dev),
                                     job.max_new_tokens, job.temperature, job.top_p, on_token)
            else:
                dev = next(self.model.parameters()).device
                new = self.model.generate(torch.tensor([job.ids], device=dev), max_new_tokens=job.max_new_tokens,
                                          temperature=job.temperature, top_p=job.top_p, eos_id=self.tok.im_end_id,
                                          on_token=on_token)[0].tolist()
        text = stream.finish()
        ends = [k for k, t in enumerate(new) if t in stop_ids]
        return Reply(text, "stop" if ends else "length", len(job.ids), ends[0] + 1 if ends else len(new))


def newest_checkpoint(steps=VLM_STEPS) -> Path | None:
    """runs/<step> of the first of `steps` that holds a checkpoint, or None (serve.py and bench.py say what then)."""
    return next((RUNS_DIR / s for s in steps if (RUNS_DIR / s / "config.json").is_file()), None)


def checkpoint_step(path: Path) -> str | None:
    """The step named in a checkpoint's config.json, without loading its weights (None when unreadable:
    the loader then says what is wrong)."""
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8")).get("step")
    except (OSError, ValueError, AttributeError):
        return None


# ----------------------------------------------------------------------------------------------------
# OpenAI messages → plain messages + pictures

DATA_URL = re.compile(r"data:(image/[\w.+-]+)(?:;[\w-]+=[\w.-]+)*;base64,(.*)", re.DOTALL)


def image_from_data_url(url: str, param: str):
    """A `data:image/...;base64,...` URL → RGB image. Any other URL is refused: the server never fetches."""
    if not url.startswith("data:"):
        raise APIError(f"{param}: only data: URLs are accepted (data:image/png;base64,...); this server never "
                       "fetches anything from the network", param, "invalid_image_url")
    m = DATA_URL.fullmatch(url.strip())
    if not m:
        raise APIError(f"{param}: not a base64 data URL of an image (expected data:image/<type>;base64,...)",
                       param, "invalid_image_url")
    payload = re.sub(r"\s+", "", m.group(2))
    if len(payload) * 3 // 4 > MAX_IMAGE_BYTES:
        raise APIError(f"{param}: the image is larger than {MAX_IMAGE_BYTES // 2**20} MB", param, "image_too_large", 413)
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(f"{param}: the data URL's base64 is invalid", param, "invalid_image_url") from None
    return checked_image(raw, param)


def checked_image(raw: bytes, param: str):
    if len(raw) > MAX_IMAGE_BYTES:
        raise APIError(f"{param}: the image is larger than {MAX_IMAGE_BYTES // 2**20} MB", param, "image_too_large", 413)
    try:
        return decode_image(io.BytesIO(raw), param)
    except CourseError as e:
        raise APIError(str(e), param, "invalid_image") from None


def read_messages(engine: Engine, messages: list[Message]) -> tuple:
    """(plain messages with <image> placeholders where the pictures go, the pictures in order)."""
    plain, images = [], []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        parts = [m.content] if isinstance(m.content, str) else m.content
        texts = [p if isinstance(p, str) else p.text for p in parts if isinstance(p, str) or p.type == "text"]
        pics = [(f"{where}.content[{j}]", p.image_url.url) for j, p in enumerate(parts)
                if not isinstance(p, str) and p.type == "image_url"]
        text = "\n".join(texts)
        if pics and not engine.vision:
            raise APIError(f"{pics[0][0]}: {engine.name} is a text-only model and reads no pictures; serve a VLM "
                           "(runs/vlm_sft) to ask about images", pics[0][0], "model_not_multimodal")
        if m.role != "user" and (pics or "<image>" in text):
            raise APIError(f"{where}: only user messages may carry pictures", where)
        if m.role == "user" and "<image>" in text and not engine.vision:
            raise APIError(f"{where}: {engine.name} is a text-only model; <image> means nothing to it", where,
                           "model_not_multimodal")
        if m.role == "user" and engine.vision:
            try:
                text = prepare_prompt(text, len(pics), engine.model.config.layout)
            except CourseError as e:
                raise APIError(f"{where}: {e}", where, "image_placeholders") from None
        images += [image_from_data_url(url, param) for param, url in pics]
        plain.append({"role": m.role, "content": text})
    return plain, images


# ----------------------------------------------------------------------------------------------------
# The app


def make_app(engine: Engine) -> FastAPI:
    app = FastAPI(title="Zero-to-VLM server", docs_url=None, redoc_url=None)

    @app.exception_handler(APIError)
    async def api_error(request, e: APIError):
        return error_response(e.status, e.message, e.param, e.code)

    @app.exception_handler(CourseError)
    async def course_error(request, e: CourseError):
        return error_response(400, str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        err = e.errors()[0]
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid" or (err.get("type") == "model_attributes_type" and not loc):
            return error_response(400, "the request body must be a JSON object (Content-Type: application/json)",
                                  None, "invalid_json")
        param = ".".join(loc) or None
        return error_response(400, f"{param or 'body'}: {err.get('msg')}", param, err.get("type"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def server_error(request, e: Exception):
        return error_response(500, f"the server failed: {type(e).__name__}: {e}", kind="server_error")

    @app.get("/", response_class=HTMLResponse)
    def page():
        return PAGE.read_text(encoding="utf-8")

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": engine.created,
                                            "owned_by": "zero-to-vlm", "vision": engine.vision,
                                            "context_length": engine.block_size}]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        def prepare():
            plain, images = read_messages(engine, req.messages)
            return engine.job(plain, images, req.max_completion_tokens or req.max_tokens, req.temperature, req.top_p)

        job = await run_in_threadpool(prepare)   # every check before the first byte: a bad request is a clean 4xx
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if not req.stream:
            r = await run_in_threadpool(engine.run, job)
            return {"id": cid, "object": "chat.completion", "created": created, "model": engine.name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text},
                                 "finish_reason": r.finish_reason, "logprobs": None}],
                    "usage": usage(r)}
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return StreamingResponse(sse_stream(engine, job, cid, created, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/generate-multipart")
    async def generate_multipart(request: Request, image: UploadFile = File(...), prompt: str = Form("描述这张图片"),
                                 max_new_tokens: int = Form(128, ge=1, le=1_000_000),
                                 temperature: float = Form(0.0, ge=0, le=2)):
        if not engine.vision:
            raise APIError(f"{engine.name} is a text-only model and reads no pictures; use /v1/chat/completions",
                           "image", "model_not_multimodal")
        raw = await image.read(MAX_IMAGE_BYTES + 1)

        def prepare():
            pic = checked_image(raw, "image")
            try:
                text = prepare_prompt(prompt, 1, engine.model.config.layout)
            except CourseError as e:
                raise APIError(str(e), "prompt", "image_placeholders") from None
            return engine.job([{"role": "user", "content": text}], [pic], max_new_tokens, temperature)

        job = await run_in_threadpool(prepare)
        r = await run_in_threadpool(engine.run, job)
        return {"model": engine.name, "prompt": prompt, "answer": r.text, "finish_reason": r.finish_reason,
                "usage": usage(r)}

    return app


def usage(r: Reply) -> dict:
    return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens}


async def sse_stream(engine: Engine, job: Job, cid: str, created: int, include_usage: bool = False):
    """Server-sent events of chat.completion.chunk objects: the role, the text as it grows, the finish reason,
    then `data: [DONE]`. The model runs in its own thread; its text reaches this loop through a queue."""
    loop, queue, cancelled = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

    def send(item):
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:   # the loop is gone (server stopping): nobody is listening
            cancelled.set()

    def work():
        try:
            send(("end", engine.run(job, lambda text: send(("text", text)), cancelled)))
        except Cancelled:
            pass
        except Exception as e:  # reported to the client in the stream: the status line has already gone out
            send(("error", e))

    def chunk(delta: dict, finish=None, **more) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": engine.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **more}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    threading.Thread(target=work, daemon=True).start()
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            kind, value = await queue.get()
            if kind == "text":
                yield chunk({"content": value})
                continue
            if kind == "error":
                err = {"message": f"generation failed: {type(value).__name__}: {value}", "type": "server_error"}
                yield f"data: {json.dumps({'error': err})}\n\n"
            else:
                yield chunk({}, value.finish_reason)
                if include_usage:
                    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": engine.name,
                            "choices": [], "usage": usage(value)}
                    yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"
            return
    finally:
        cancelled.set()   # a client that went away stops its generation at the next token


# ----------------------------------------------------------------------------------------------------
# Running it in the background (tests, the bench)


@dataclass
class Served:
    url: str
    stop: object


def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Served:
    """Start uvicorn in a daemon thread and wait until it accepts connections; port 0 picks a free one."""
    import uvicorn
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.time()
    while not server.started:
        if not thread.is_alive() or time.time() - t0 > timeout:
            raise CourseError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    real_port = server.servers[0].sockets[0].getsockname()[1]

    def stop():
        server.should_exit = True
        thread.join(timeout)

    return Served(f"http://{host}:{real_port}", stop)
