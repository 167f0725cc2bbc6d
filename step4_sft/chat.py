"""A terminal chat with any course GPT checkpoint: the reply streams token by token and the history is kept.
Step 4's and step 5's demo.py both run it."""
import torch

from step2_gpt.stream import TextStreamer

MAX_REPLY_TOKENS = 64


def add_chat_flags(parser):
    """The flags every chat takes: --prompt (one turn, then exit), --temperature, --top-p."""
    parser.add_argument("--prompt", default=None, help="单轮提问 ask one question and exit")
    parser.add_argument("--temperature", type=float, default=0.0, help="温度 0 = greedy")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling")


def stream_reply(model, tok, history, device, temperature=0.0, top_p=None, write=print):
    """Generate the assistant's next turn for `history` (messages), printing it as it comes → the reply text."""
    ids, _ = tok.render_conversation(history, add_generation_prompt=True)
    stream = TextStreamer(tok, lambda s: write(s, end="", flush=True), stop_ids=(tok.im_end_id, tok.eos_id))
    model.generate(torch.tensor([ids[-(model.config.block_size - MAX_REPLY_TOKENS):]], device=device),
                   max_new_tokens=MAX_REPLY_TOKENS, temperature=temperature, top_p=top_p, eos_id=tok.im_end_id,
                   on_token=stream)
    write()
    return stream.finish()


def chat(model, tok, device, prompt=None, temperature=0.0, top_p=None):
    """One turn for `prompt`, or a multi-turn chat read from the terminal (/reset clears, /quit leaves)."""
    history = []
    while True:
        text = prompt if prompt is not None else input("you> ").strip()
        if text in ("/quit", "/exit"):
            return
        if text == "/reset":
            history = []
            print("(history cleared)")
            continue
        history.append({"role": "user", "content": text})
        print("bot> ", end="", flush=True)
        history.append({"role": "assistant", "content": stream_reply(model, tok, history, device, temperature, top_p)})
        if prompt is not None:
            return
