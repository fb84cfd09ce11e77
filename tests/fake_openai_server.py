"""A local fake of the OpenAI chat-completions and moderations endpoints, for tests and benchmarks.

Listens on 127.0.0.1 only (port 0: the OS picks a free one), speaks the wire format the OpenAI API
returns (``choices[0].message.content``, ``choices[0].logprobs.content[0].top_logprobs`` as a list
of ``{token, logprob, bytes}``, ``usage``, moderation ``results[0].category_scores``), and answers
deterministically from a hash of the request content, so a run with faults must give exactly the
results of a run without.

Faults are a script: ``inject("429", "429", "500", "hang", ...)`` queues them, and each authorised
request takes the next one in arrival order. Kinds:

* ``429``: rate limited, with a ``Retry-After`` header (``retry_after``, seconds);
* ``500``: server error;
* ``hang``: reads the request, then says nothing for ``hang_s`` (longer than the client's timeout)
  and closes the connection;
* ``malformed``: a 200 whose body is truncated JSON;
* ``no_logprobs``: a 200 with ``logprobs: null`` (moderations: no ``results``);
* ``nan_logprobs``: a 200 whose first top logprob is ``NaN`` (the JSON token Python writes and
  reads; moderations: a ``NaN`` harassment score).

Every request is recorded (path, sha256 of the body, outcome, time), but never the Authorization
header: the server only checks it, and echoes a *rejected* key in its 401 message as the real API
does, so tests can check that the client redacts it. Bounded: request bodies up to 1 MiB, at most
``max_requests`` requests, hangs end at ``hang_s`` or when the server stops.

Special markers in the judged text steer the answer: ``REFUSE_ME`` makes the most probable token
"REFUSAL"; ``LOW_MASS`` leaves only 10% of the probability on integer tokens.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import math
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

FAULT_KINDS = ("429", "500", "hang", "malformed", "no_logprobs", "nan_logprobs")
MAX_BODY_BYTES = 1 << 20
N_TOP = 20
MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "self-harm",
                         "sexual", "sexual/minors", "violence", "violence/graphic")


@dataclass(frozen=True)
class Recorded:
    path: str
    body_sha: str
    outcome: str     # "ok", a fault kind, "unauthorized", "bad_request", "not_found", "too_many"
    status: int      # 0 for a hang (no response)
    t: float         # time.monotonic() at arrival


def _h(content: str) -> int:
    return int(hashlib.sha256(content.encode("utf-8")).hexdigest()[:12], 16)


def judge_distribution(content: str) -> list[tuple[str, float]]:
    """The fake judge's first-token distribution for a prompt: N_TOP (token, probability) pairs.

    Integer tokens around a hash-derived centre (one with a leading space, as real tokenizers
    produce), padded with non-numeric filler tokens sharing a small remaining mass."""
    h = _h(content)
    c = h % 101
    if "REFUSE_ME" in content:
        head = [("REFUSAL", 0.7), (str(c), 0.2)]
    elif "LOW_MASS" in content:
        head = [("I", 0.8), (str(c), 0.1)]
    else:
        head = [(str(c), 0.6), (str((c + 7) % 101), 0.25), (" " + str((c + 50) % 101), 0.1)]
    rest = 1.0 - sum(p for _, p in head)
    n_fill = N_TOP - len(head)
    return head + [(f"w{i}", rest / n_fill) for i in range(n_fill)]


def grade_text(content: str) -> str:
    return f"The answer argues one side with some force.\n\n**GRADE: {_h(content) % 11}**"


PARAPHRASE_MARKER = "paraphrases of the following instruction"
PARAPHRASE_WORDS = ["please", "kindly", "always", "be sure to", "make sure you", "remember to", "try to",
                    "you should", "do", "feel free to", "it is best to", "you must"]


REWRITE_MARKER = "Rewrite the answer below accordingly"


def paraphrase_text(content: str, temperature: float) -> str:
    """A numbered list of paraphrases, deterministic in the request (its seed line varies it).
    Some lines repeat or only differ in case and punctuation, so a client's de-duplication is
    exercised; the requested count is read from "Write N different"."""
    import re as _re

    m = _re.search(r"Write (\d+) different", content)
    k = int(m.group(1)) if m else 5
    instruction = content.rsplit("Instruction:", 1)[-1].split("\n")[0].strip().rstrip(".")
    h = _h(content)
    lines = []
    for i in range(k):
        j = (h >> (i % 48)) + i * 7919
        if i % 5 == 4:  # a near-duplicate of the previous line: case and punctuation only
            lines.append(lines[-1].upper().rstrip(".") + "!")
            continue
        word = PARAPHRASE_WORDS[j % len(PARAPHRASE_WORDS)]
        lines.append(f"{word.capitalize()} {instruction.lower()} (variant {j % 100003}).")
    return "\n".join(f"{i + 1}. {line}" for i, line in enumerate(lines))


def moderation_scores(text: str) -> dict[str, float]:
    h = _h(text)
    scores = {c: ((h >> (4 * i)) % 100) / 10_000 for i, c in enumerate(MODERATION_CATEGORIES)}
    scores["harassment"] = (h % 1000) / 1000
    return scores


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as the client pools connections
    timeout = 10                    # idle keep-alive connections end eventually
    # Headers and body go out in separate send()s; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms per request). Real servers (uvicorn, vLLM) set TCP_NODELAY too.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, payload: Any = None, *, raw: bytes | None = None,
              headers: dict[str, str] | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": "fake_error", "code": status}},
                   headers=headers)

    def do_POST(self) -> None:  # http.server's naming
        fake = self.server.fake
        t = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(413, "request too large")
            return
        raw = self.rfile.read(length)
        sha = hashlib.sha256(raw).hexdigest()

        def record(outcome: str, status: int) -> None:
            fake._record(Recorded(self.path, sha, outcome, status, t))

        if fake.n_requests() >= fake.max_requests:
            record("too_many", 503)
            self._error(503, "fake server request budget exhausted")
            return
        auth = self.headers.get("Authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Bearer {fake.api_key}".encode()):
            provided = auth.removeprefix("Bearer ")
            record("unauthorized", 401)
            # Echo the rejected key like a careless server would; the client must redact it.
            self._error(401, f"Incorrect API key provided: {provided or '<none>'}")
            return
        if self.path.endswith("/chat/completions"):
            endpoint = "chat"
        elif self.path.endswith("/moderations"):
            endpoint = "moderations"
        else:
            record("not_found", 404)
            self._error(404, f"no route {self.path}")
            return
        try:
            req = json.loads(raw)
            problem = _validate(endpoint, req)
        except ValueError:
            problem = "body is not JSON"
        if problem:
            record("bad_request", 400)
            self._error(400, problem)
            return

        fault = fake._next_fault()
        if fake.latency_s:
            time.sleep(fake.latency_s)
        if fault == "429":
            record("429", 429)
            self._error(429, "Rate limit reached", headers={"Retry-After": fake.retry_after})
        elif fault == "500":
            record("500", 500)
            self._error(500, "The server had an error while processing your request.")
        elif fault == "hang":
            record("hang", 0)
            fake._stop.wait(fake.hang_s)   # bounded: ends early when the server stops
            self.close_connection = True   # then drop the connection without answering
        elif fault == "malformed":
            record("malformed", 200)
            self._send(200, raw=b'{"id": "chatcmpl-fake", "object": "chat.completion", "choices": [{"ind')
        elif fault == "no_logprobs":
            record("no_logprobs", 200)
            self._send(200, _response(endpoint, req, drop=True))
        elif fault == "nan_logprobs":
            record("nan_logprobs", 200)
            self._send(200, _response(endpoint, req, drop=False, nan=True))
        else:
            record("ok", 200)
            self._send(200, _response(endpoint, req, drop=False))


def _validate(endpoint: str, req: Any) -> str | None:
    """The fields the client must send, so a wire-format mistake fails the tests loudly."""
    if not isinstance(req, dict) or not isinstance(req.get("model"), str):
        return "'model' is required"
    if endpoint == "moderations":
        if "moderation" not in req["model"]:  # as the real endpoint refuses a chat model
            return f"model {req['model']!r} is not a moderation model"
        return None if isinstance(req.get("input"), str) else "'input' must be a string"
    msgs = req.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(
            isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
            and isinstance(m.get("content"), str) for m in msgs):
        return "'messages' must be a non-empty list of {role, content}"
    if req.get("logprobs"):
        n = req.get("top_logprobs")
        if not isinstance(n, int) or not 0 <= n <= 20:
            return "'top_logprobs' must be an integer in 0..20 when logprobs is true"
    return None


def _response(endpoint: str, req: dict[str, Any], *, drop: bool, nan: bool = False) -> dict[str, Any]:
    if endpoint == "moderations":
        if drop:
            return {"id": "modr-fake", "model": req["model"]}
        scores = moderation_scores(req["input"])
        if nan:
            scores["harassment"] = math.nan
        return {"id": "modr-fake", "model": req["model"], "results": [{
            "flagged": scores["harassment"] > 0.5,
            "categories": {c: s > 0.5 for c, s in scores.items()},
            "category_scores": scores}]}

    content = "\n".join(m["content"] for m in req["messages"])
    prompt_tokens = len(content) // 4 + 1
    logprobs = None
    if req.get("logprobs") and not drop:
        top = [{"token": tok, "logprob": math.log(p), "bytes": list(tok.encode("utf-8"))}
               for tok, p in judge_distribution(content)[: req["top_logprobs"]]]
        if nan and top:
            top[0]["logprob"] = math.nan
        logprobs = {"content": [{**top[0], "top_logprobs": top}]}
    if req.get("max_tokens") == 1:
        text, completion_tokens, finish = judge_distribution(content)[0][0], 1, "length"
    elif REWRITE_MARKER in content:  # the rewriter: the answer in capitals, marked as Spanish
        text = "EN ESPAÑOL: " + content.split("Answer:\n", 1)[-1].upper()
        completion_tokens, finish = len(text) // 4 + 1, "stop"
    elif PARAPHRASE_MARKER in content:
        text = paraphrase_text(content, req.get("temperature", 1.0))
        completion_tokens, finish = len(text) // 4 + 1, "stop"
    else:
        text = grade_text(content)
        completion_tokens, finish = len(text) // 4 + 1, "stop"
    return {
        "id": f"chatcmpl-{_h(content):x}", "object": "chat.completion", "created": 1_700_000_000,
        "model": req["model"], "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": logprobs, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops simultaneous connects beyond it, which then wait
    # out a 1 s SYN retransmit: fatal for a concurrency-32 benchmark.
    request_queue_size = 128
    fake: FakeOpenAIServer


class FakeOpenAIServer:
    """Start with ``with FakeOpenAIServer(api_key=...) as srv:`` and point a client at
    ``srv.base_url``."""

    def __init__(self, api_key: str, *, latency_s: float = 0.0, hang_s: float = 3.0,
                 retry_after: str = "0", max_requests: int = 100_000):
        self.api_key, self.latency_s, self.hang_s = api_key, latency_s, hang_s
        self.retry_after, self.max_requests = retry_after, max_requests
        self._faults: collections.deque[str] = collections.deque()
        self._records: list[Recorded] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # releases hung handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # -- faults and records ------------------------------------------------------------------

    def inject(self, *faults: str) -> None:
        bad = [f for f in faults if f not in FAULT_KINDS]
        if bad:
            raise ValueError(f"unknown fault kinds {bad}; known: {FAULT_KINDS}")
        with self._lock:
            self._faults.extend(faults)

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def _next_fault(self) -> str | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _record(self, r: Recorded) -> None:
        with self._lock:
            self._records.append(r)

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._records)

    def n_requests(self) -> int:
        with self._lock:
            return len(self._records)

    def outcomes(self) -> collections.Counter[str]:
        return collections.Counter(r.outcome for r in self.requests)

    def ok_bodies(self) -> list[str]:
        """sha256 of every request answered successfully (duplicates kept)."""
        return [r.body_sha for r in self.requests if r.outcome == "ok"]
