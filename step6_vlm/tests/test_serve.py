"""The server (server.py, serve.py): the official openai client in strict mode, raw server-sent events, the upload
endpoint, every bad input as an OpenAI-shaped 4xx, concurrent clients, a text-only checkpoint, and a real browser."""
import base64
import io
import json
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest
import torch

from step6_vlm.tests.conftest import make_vlm

HERE = Path(__file__).resolve().parents[1]
TEST_JPG = HERE / "test.jpg"
# What the tiny test model learns to say: distinct answers, so a reply that went to the wrong client shows.
TAUGHT = {"这是什么颜色？": "红色的圆形。", "what shape is it?": "a blue square.", "数一数": "三个黄色的三角形。"}


def teach(vlm, tok, steps=120):
    """Overfit the tiny VLM on TAUGHT (with and without a picture), so greedy answers are known, Chinese, and end."""
    from step6_vlm.model import build_example
    from step6_vlm.loop import collate
    convs = [[{"role": "user", "content": q + tail}, {"role": "assistant", "content": a}]
             for q, a in TAUGHT.items() for tail in ("", "\n<image>")]
    x, y, _ = collate([(i, *build_example(vlm, tok, c)) for i, c in enumerate(convs)], tok.pad_id)
    n_img = int((x == vlm.config.image_token_id).sum()) // vlm.tokens_per_image
    feats = torch.zeros(n_img, vlm.config.n_patches, vlm.config.vision_dim)   # (N, P, D): any picture reads alike
    opt = torch.optim.AdamW(vlm.parameters(), lr=3e-3)
    torch.manual_seed(0)
    vlm.train()
    for _ in range(steps):
        _, loss = vlm(x, y, image_features=feats)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vlm.eval()


@pytest.fixture(scope="module")
def ckpts(tok, clip_dir, tmp_path_factory):
    from common.checkpoint import save_checkpoint
    from step6_vlm.model import save_vlm
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("serve")
    vlm = teach(make_vlm(tok, clip_dir, block_size=128), tok)
    save_vlm(root / "vlm_sft", vlm, tok, "vlm_sft")
    save_checkpoint(root / "sft", state_dict=vlm.llm.state_dict(), step="sft", model_config=vlm.llm.config.to_dict(),
                    tokenizer=tok)   # a text-only GPT checkpoint: the same LLM without its eyes
    return root


@pytest.fixture(scope="module")
def servers(ckpts):
    from step6_vlm.server import Engine, make_app, serve_in_thread
    vlm, text = (serve_in_thread(make_app(Engine.load(ckpts / name))) for name in ("vlm_sft", "sft"))
    yield {"vlm": vlm.url, "text": text.url}
    vlm.stop()
    text.stop()


@pytest.fixture(scope="module")
def client(servers):
    from openai import OpenAI
    return OpenAI(base_url=servers["vlm"] + "/v1", api_key="none", _strict_response_validation=True, max_retries=0)


def data_url(raw: bytes, mime="image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def image_msg(text, url=None):
    return {"role": "user", "content": [{"type": "text", "text": text},
                                        {"type": "image_url", "image_url": {"url": url or data_url(TEST_JPG.read_bytes())}}]}


def post(url, body, content_type="application/json"):
    """(status, parsed JSON) of a POST; the body goes as is when it is bytes."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def sse_events(url, body) -> list:
    """Every `data:` payload of a streamed reply, read raw off the socket, in order (the last is "[DONE]")."""
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps({**body, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        raw = r.read().decode("utf-8")
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), raw[:300]
    return [e[len("data: "):] for e in events]


def ask(url, messages, **kw):
    status, j = post(url + "/v1/chat/completions", {"messages": messages, "temperature": 0, **kw})
    assert status == 200, j
    return j


# ----------------------------------------------------------------------------------------------------


def test_openai_client_strict_plain_streamed_chinese_and_image(client):
    assert [m.id for m in client.models.list().data] == ["vlm_sft"]
    q, a = "这是什么颜色？", TAUGHT["这是什么颜色？"]
    r = client.chat.completions.create(model="vlm_sft", messages=[{"role": "user", "content": q}], temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == a and r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens and r.usage.completion_tokens > 1
    chunks = list(client.chat.completions.create(model="vlm_sft", messages=[{"role": "user", "content": q}], stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == a
    assert chunks[-1].choices[0].finish_reason == "stop"
    with_image = client.chat.completions.create(model="vlm_sft", messages=[image_msg("what shape is it?")])
    assert with_image.choices[0].message.content == TAUGHT["what shape is it?"]
    cut = client.chat.completions.create(model="vlm_sft", messages=[image_msg("数一数")], max_tokens=2)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2


def test_raw_sse_sees_every_chunk_and_done_and_equals_the_plain_reply(servers):
    url = servers["vlm"]
    for messages in ([{"role": "user", "content": "数一数"}], [image_msg("这是什么颜色？")],
                     [{"role": "user", "content": "随便说点什么吧"}]):      # untaught: whatever the model says
        plain = ask(url, messages, max_tokens=24)["choices"][0]
        events = sse_events(url, {"messages": messages, "max_tokens": 24, "temperature": 0})
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks) and len({c["id"] for c in chunks}) == 1
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks]
        assert "".join(pieces) == plain["message"]["content"]
        assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + [plain["finish_reason"]]
        if "\ufffd" not in plain["message"]["content"]:
            assert not any("\ufffd" in p for p in pieces)   # never half a character
    assert "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in
                   sse_events(url, {"messages": [{"role": "user", "content": "数一数"}]})[:-1]) == TAUGHT["数一数"]


def multipart(url, fields: dict, files: dict):
    """POST multipart/form-data built by hand (what curl -F sends); → (status, JSON)."""
    boundary = "----course-test-boundary"
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, (name, raw) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
                  f'Content-Type: application/octet-stream\r\n\r\n'.encode() + raw + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return post(url + "/v1/generate-multipart", out.getvalue(), f"multipart/form-data; boundary={boundary}")


def test_generate_multipart_with_a_real_upload(servers):
    status, j = multipart(servers["vlm"], {"prompt": "what shape is it?", "max_new_tokens": "40"},
                          {"image": ("test.jpg", TEST_JPG.read_bytes())})
    assert status == 200, j
    assert j["answer"] == TAUGHT["what shape is it?"] and j["finish_reason"] == "stop" and j["model"] == "vlm_sft"
    status, j = multipart(servers["vlm"], {"prompt": "数一数"}, {"image": ("bad.jpg", TEST_JPG.read_bytes()[:300])})
    assert status == 400 and j["error"]["param"] == "image", j
    status, j = multipart(servers["vlm"], {"prompt": "数一数"}, {})
    assert status == 400 and "image" in j["error"]["param"], j


def huge_png(side=20_000) -> bytes:
    """A valid PNG header announcing side×side pixels (a decompression bomb's shape) with almost no data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def user(text):
    return {"messages": [{"role": "user", "content": text}]}


JPG = TEST_JPG.read_bytes()
BAD = {   # name: (body, expected status, what the message must mention)
    "not JSON": (b"{not json", 400, "JSON"),
    "a form instead of JSON": (b"a=1", 400, "JSON"),
    "missing messages": ({"max_tokens": 5}, 400, "messages"),
    "no messages": ({"messages": []}, 400, "messages"),
    "unknown role": ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
    "content not text": ({"messages": [{"role": "user", "content": 5}]}, 400, "content"),
    "web URL": ({"messages": [image_msg("x", "https://example.com/cat.png")]}, 400, "never fetches"),
    "data URL of text": ({"messages": [image_msg("x", "data:text/plain;base64,aGVsbG8=")]}, 400, "data URL"),
    "bad base64": ({"messages": [image_msg("x", "data:image/png;base64,***")]}, 400, "base64"),
    "data URL not an image": ({"messages": [image_msg("x", data_url(b"hello world", "image/png"))]}, 400, "image"),
    "truncated image": ({"messages": [image_msg("x", data_url(JPG[: len(JPG) // 2]))]}, 400, "image"),
    "huge image in bytes": ({"messages": [image_msg("x", "data:image/png;base64," + "A" * (12 * 2**20))]}, 413, "MB"),
    "huge image in pixels": ({"messages": [image_msg("x", data_url(huge_png(), "image/png"))]}, 400, "too large"),
    "two images, no placeholders": ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "compare"}, *image_msg("x")["content"][1:] * 2]}]}, 400, "<image>"),
    "placeholders without images": (user("<image> and <image>"), 400, "<image>"),
    "picture from the assistant": ({"messages": [{**image_msg("x"), "role": "assistant"}]}, 400, "user"),
    "prompt too long": (user("这是什么颜色？" * 200), 400, "context"),
    "max_tokens 0": ({**user("hi"), "max_tokens": 0}, 400, "max_tokens"),
    "max_tokens negative": ({**user("hi"), "max_tokens": -3}, 400, "max_tokens"),
    "max_tokens absurd": ({**user("hi"), "max_tokens": 10**12}, 400, "max_tokens"),
    "max_tokens beyond the context": ({**user("hi"), "max_tokens": 5000}, 400, "context"),
    "negative temperature": ({**user("hi"), "temperature": -1}, 400, "temperature"),
    "top_p 0": ({**user("hi"), "top_p": 0}, 400, "top_p"),
}


def test_every_bad_input_is_an_openai_error_and_the_server_keeps_serving(servers, ckpts):
    url = servers["vlm"]
    before = sorted((p.name, p.stat().st_size) for p in (ckpts / "vlm_sft").iterdir())
    for name, (body, status, says) in BAD.items():
        for stream in (False, True):   # a streamed request is refused before its first byte, the same way
            if stream and not isinstance(body, dict):
                continue
            got, j = post(url + "/v1/chat/completions", {**body, "stream": True} if stream else body)
            assert got == status, (name, j)
            err = j["error"]
            assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error", name
            assert says.lower() in err["message"].lower(), (name, err["message"])
    req = urllib.request.Request(url + "/nowhere")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 404 and "message" in json.loads(e.value.read())["error"]
    assert ask(url, [{"role": "user", "content": "数一数"}])["choices"][0]["message"]["content"] == TAUGHT["数一数"]
    assert sorted((p.name, p.stat().st_size) for p in (ckpts / "vlm_sft").iterdir()) == before


def test_concurrent_clients_get_their_own_uncorrupted_answers(servers):
    url = servers["vlm"]
    asks = [[{"role": "user", "content": q}] for q in TAUGHT] + [[image_msg(q)] for q in TAUGHT]
    alone = [ask(url, m, max_tokens=20)["choices"][0]["message"]["content"] for m in asks]
    got, errors = {}, []

    def client(k):
        try:
            for i in range(k, len(asks) * 2, 4):   # 4 clients, each asks 3 of the 12, streamed and plain mixed
                m = asks[i % len(asks)]
                if i % 2:
                    events = sse_events(url, {"messages": m, "max_tokens": 20, "temperature": 0})
                    got[i] = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
                else:
                    got[i] = ask(url, m, max_tokens=20)["choices"][0]["message"]["content"]
        except Exception as e:  # noqa: BLE001  (reported below, with the client that saw it)
            errors.append((k, e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert got == {i: alone[i % len(asks)] for i in range(len(asks) * 2)}
    assert set(TAUGHT.values()) <= set(alone)


def test_text_only_checkpoint_serves_text_and_refuses_pictures(servers):
    url = servers["text"]
    from openai import OpenAI
    c = OpenAI(base_url=url + "/v1", api_key="none", _strict_response_validation=True, max_retries=0)
    assert c.models.list().data[0].id == "sft"
    r = c.chat.completions.create(model="sft", messages=[{"role": "user", "content": "数一数"}], temperature=0)
    assert r.choices[0].message.content == TAUGHT["数一数"]   # the same LLM, without its eyes
    for body in ({"messages": [image_msg("what shape is it?")]}, user("<image> what shape?")):
        status, j = post(url + "/v1/chat/completions", body)
        assert status == 400 and "text-only" in j["error"]["message"], j
    status, j = multipart(url, {"prompt": "x"}, {"image": ("test.jpg", JPG)})
    assert status == 400 and j["error"]["code"] == "model_not_multimodal"
    assert ask(url, [{"role": "user", "content": "what shape is it?"}])["choices"][0]["message"]["content"]


def test_cli_says_which_command_makes_a_missing_checkpoint(tmp_path):
    r = subprocess.run([sys.executable, str(HERE / "serve.py"), "--init", str(tmp_path / "none")], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: no checkpoint at") and "step6_vlm/train.py" in r.stderr, r.stderr


def finished_reply(drv, wait, n):
    """The text of the n-th answer bubble once its stream has ended (a failed request shows its error, not a timeout)."""
    from selenium.webdriver.common.by import By
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg[data-state=done]")) == n)
    bubble = drv.find_elements(By.CSS_SELECTOR, ".msg[data-state=done]")[-1]
    assert "assistant" in bubble.get_attribute("class"), bubble.text   # "msg error": the page shows the API's error
    return bubble.text


def test_browser_page_uploads_a_picture_and_streams_the_answer(servers, headless_chrome):
    """Headless Chromium: the page shows the model, previews the picture, and its streamed answers equal the
    API's non-streamed ones for the same conversation (the picture exactly as the page encoded it)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from common import RUNS_DIR
    url = servers["vlm"]
    drv = headless_chrome(900, 700)
    drv.get(url + "/")
    wait = WebDriverWait(drv, 15)
    wait.until(lambda d: "vlm_sft" in d.find_element(By.ID, "model").text)
    drv.find_element(By.ID, "image").send_keys(str(TEST_JPG))
    preview = drv.find_element(By.ID, "preview")
    wait.until(lambda d: (preview.get_attribute("src") or "").startswith("data:image/jpeg;base64,"))
    picture = preview.get_attribute("src")
    assert base64.b64decode(picture.split(",", 1)[1]) == TEST_JPG.read_bytes() and preview.is_displayed()
    box = drv.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys("what shape is it?")
    drv.find_element(By.ID, "send").click()
    first = finished_reply(drv, wait, 1)
    history = [image_msg("what shape is it?", picture)]
    assert first == ask(url, history)["choices"][0]["message"]["content"] == TAUGHT["what shape is it?"]
    assert drv.find_element(By.CSS_SELECTOR, ".msg.user img").get_attribute("src") == picture
    assert not preview.is_displayed()   # the picture went with the question
    box.send_keys("数一数")   # a second turn: the history goes along, the answer streams into a new bubble
    drv.find_element(By.ID, "send").click()
    second = finished_reply(drv, wait, 2)
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": "数一数"}]
    assert second and second == ask(url, history)["choices"][0]["message"]["content"]
    shot = RUNS_DIR / "serve" / "browser_test.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert drv.save_screenshot(str(shot))
    from PIL import Image
    with Image.open(shot) as im:
        lo, hi = im.convert("L").getextrema()
        assert im.size[0] >= 600 and hi - lo > 100, (im.size, lo, hi)   # a drawn page, not a blank one


def test_bench_serve_reports_its_documented_keys_and_concurrent_answers_match(ckpts, tmp_path):
    r = subprocess.run([sys.executable, str(HERE / "lab" / "bench.py"), "--serve", "--quick", "--init", str(ckpts / "vlm_sft")],
                       capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    j = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(j) == {"mode", "model", "vision", "device", "ttft_p50_ms", "reply_tokens", "tokens_per_s", "clients",
                      "latency_p50_s", "latency_p95_s", "correct"}
    assert j["vision"] and j["model"] == "vlm_sft" and j["correct"] == j["clients"] == 3
    assert 0 < j["ttft_p50_ms"] < 1000 * j["latency_p95_s"] and j["latency_p50_s"] <= j["latency_p95_s"]
