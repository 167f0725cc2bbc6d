"""Streaming text out of `GPT.generate`, one token at a time, without ever showing half a character.

A byte-level token can end in the middle of a UTF-8 character (a Chinese character is 3 bytes, an emoji 4), and
decoding such a prefix gives the replacement character U+FFFD. So the streamer decodes everything so far and
hands on only the new text, holding it back while it still ends in a broken character.

    stream = TextStreamer(tok, lambda piece: print(piece, end="", flush=True))
    model.generate(ids, on_token=stream, eos_id=tok.eos_id)
    stream.finish()      # what was held back, if the model stopped mid-character; stream.text is the whole answer
"""
from collections.abc import Callable


class TextStreamer:
    """`on_token` callback of `GPT.generate` for one sequence (batch of 1): calls `write(new_text)` as soon as
    the decoded text grows by whole characters. `stop_ids`: tokens that end the answer and are not text."""

    def __init__(self, tokenizer, write: Callable[[str], None] | None = None, stop_ids=()):
        self.tok, self.write, self.stop_ids = tokenizer, write, set(stop_ids)
        self.ids, self.text, self.stopped = [], "", False

    def __call__(self, token) -> None:  # token: the (1,) tensor generate passes, or an int
        i = int(token[0]) if hasattr(token, "__getitem__") else int(token)
        if self.stopped or i in self.stop_ids:
            self.stopped = True  # generate repeats the end token for rows that finished: ignore the rest
            return
        self.ids.append(i)
        text = self.tok.decode(self.ids, skip_special=True)
        if not text.endswith("\ufffd"):
            self._emit(text)

    def finish(self) -> str:
        """Flush what is still held back (a character the model never completed shows as U+FFFD); the full text."""
        self._emit(self.tok.decode(self.ids, skip_special=True))
        return self.text

    def _emit(self, text: str) -> None:
        new, self.text = text[len(self.text):], text
        if new and self.write is not None:
            self.write(new)
