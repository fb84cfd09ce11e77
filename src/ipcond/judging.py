"""LLM judges over any OpenAI-compatible endpoint (OpenAI API or a local vLLM server).

At paper scale the traits of model responses are scored by LLM judges. This module is their client
(foundation layer: it imports nothing of the package); the scorers built on it, behind the same
``Scorer`` protocol as the toy rules, are in ``ipcond.judge_scoring``. Pieces, from the bottom up:

* pure parsing: ``score_from_logprobs`` (probability-weighted 0-100 score over the judge's first
  token) and ``parse_grade`` ("GRADE: X" on a 0-10 scale);
* ``JudgeTemplate`` / ``load_template``: prompt templates shipped in ``judge_templates/*.txt``;
* ``JudgeCache`` (``ipcond.judge_cache``): a content-addressed sqlite cache, so a re-run pays for
  nothing already judged and an interrupted run resumes (every result is committed the moment it
  arrives);
* ``JudgeClient``: bounded-concurrency HTTP client (standard library only) with retries, backoff,
  a spend cap and token/cost accounting.

The API key is read from the environment variable named by ``JudgeConfig.api_key_env`` at the
moment each request is sent. It is never stored on any object, and every message built from server
text is redacted, so it cannot end up in a repr, log line, exception, cache entry or output file.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import email.utils
import http.client
import json
import logging
import math
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self

from .errors import JudgeError  # noqa: F401 (re-exported: callers catch ipcond.judging.JudgeError)
from .judge_cache import JudgeCache, cache_key  # noqa: F401 (re-exported with the client)

log = logging.getLogger(__name__)

JudgeKind = Literal["logprob_0_100", "grade_0_10"]
JUDGE_KINDS: tuple[str, ...] = ("logprob_0_100", "grade_0_10")
# Betley et al.'s alignment judge answers CODE or REFUSAL instead of a number for those cases.
DEFAULT_CATEGORIES: tuple[str, ...] = ("CODE", "REFUSAL")

# A server asking us to wait longer than this is treated as asking for this long: a judge run
# should fail visibly rather than sleep for an hour on one header.
_MAX_RETRY_AFTER_S = 120.0


# --------------------------------------------------------------------------------------------
# Configuration and errors
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JudgeConfig:
    """Where and how to call a judge. Holds the *name* of the key's environment variable, never
    the key, so printing or serialising a config cannot leak it."""

    base_url: str                      # e.g. "http://127.0.0.1:8000/v1" or "https://api.openai.com/v1"
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 8
    max_retries: int = 6               # retries per request, after the first attempt
    timeout_s: float = 30.0            # per socket operation: a hung connection fails after this
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    min_valid_mass: float = 0.25       # below this share of integer-token probability: no score
    max_calls_per_run: int | None = None   # spend cap on HTTP requests (retries included) per client
    price_per_1k_input_tokens: float | None = None
    price_per_1k_output_tokens: float | None = None
    top_logprobs: int = 20             # the OpenAI API's maximum
    grade_max_tokens: int = 512        # grade judges reason before "GRADE: X"

    def __post_init__(self) -> None:
        if urllib.parse.urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ValueError(f"JudgeConfig.base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model:
            raise ValueError("JudgeConfig.model must be set")
        if self.max_concurrency < 1:
            raise ValueError(f"JudgeConfig.max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"JudgeConfig.max_retries must be >= 0, got {self.max_retries}")
        if self.timeout_s <= 0 or self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError("JudgeConfig timeout_s must be > 0 and backoff_base_s, backoff_max_s >= 0")
        if not 0.0 <= self.min_valid_mass <= 1.0:
            raise ValueError(f"JudgeConfig.min_valid_mass must be in [0, 1], got {self.min_valid_mass}")
        if self.max_calls_per_run is not None and self.max_calls_per_run < 0:
            raise ValueError(f"JudgeConfig.max_calls_per_run must be >= 0 or None, got {self.max_calls_per_run}")
        if not 1 <= self.top_logprobs <= 20:
            raise ValueError(f"JudgeConfig.top_logprobs must be in 1..20, got {self.top_logprobs}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JudgeConfig:
        """Build from a config-file section; unknown keys are an error (typos would silently fall
        back to defaults), and a literal key in the config file is refused outright."""
        for secret in ("api_key", "key", "token", "authorization"):
            if secret in d:
                # Deliberately does not echo the value.
                raise ValueError(f"judge config has a {secret!r} entry: never put the API key in a config "
                                 "file; export it as an environment variable and name that variable "
                                 "with 'api_key_env' (default OPENAI_API_KEY)")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown judge config keys {unknown}; known: {sorted(known)}")
        return cls(**dict(d))


class JudgeAuthError(JudgeError):
    """The endpoint rejected the credentials (HTTP 401/403)."""


def preflight_endpoint(spec: dict, where: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any work, where an LLM endpoint cannot be used from here: the key's
    environment variable that the config names (``api_key_env``) is not set, or nothing answers
    at ``base_url``'s host and port (no network). The key itself is never read into a message."""
    import socket
    import urllib.parse

    env = spec.get("api_key_env")
    if env and not os.environ.get(env):
        raise JudgeAuthError(f"{where}.api_key_env names the environment variable {env}, which is not set here. "
                             f"Export it with the endpoint's key ({where}.base_url = {spec.get('base_url')}) before "
                             "running; keys never go in config files")
    url = urllib.parse.urlsplit(spec["base_url"])
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise JudgeError(f"{where}.base_url = {spec['base_url']}: cannot connect to {host}:{port} "
                         f"({type(e).__name__}: {e}). This machine has no network access to it, or the server is "
                         f"down. Run this step where {host} is reachable, or point {where}.base_url at a server "
                         "that is") from None


class SpendCapExceeded(JudgeError):
    """``max_calls_per_run`` was reached; what was judged before is cached, so a re-run resumes."""


# --------------------------------------------------------------------------------------------
# Pure parsing
# --------------------------------------------------------------------------------------------

def _as_int_0_100(token: str) -> int | None:
    t = token.strip()
    # isascii: str.isdigit accepts e.g. superscripts and other scripts' digits, which int() rejects.
    if t and t.isascii() and t.isdigit():
        v = int(t)
        if 0 <= v <= 100:
            return v
    return None


def _match_category(token: str, categories: Sequence[str]) -> str | None:
    """The category a token stands for. With max_tokens=1 the judge emits only the first token
    of e.g. "REFUSAL" ("REF" in several tokenizers), so a prefix of >= 3 characters also counts."""
    t = token.strip().upper()
    if not t:
        return None
    for c in categories:
        cu = c.upper()
        if t == cu or (len(t) >= 3 and cu.startswith(t)):
            return c
    return None


def score_from_logprobs(top_logprobs: Sequence[Mapping[str, Any]], min_mass: float = 0.25,
                        categories: Sequence[str] = DEFAULT_CATEGORIES,
                        ) -> tuple[float | None, float, str | None]:
    """Score a 0-100 judge from the top log-probabilities of its first answer token.

    Returns ``(score, valid_mass, category)``: ``score`` is the probability-weighted mean of the
    tokens that are integers 0..100 (whitespace stripped, everything else ignored), ``valid_mass``
    the total probability of those tokens. ``score`` is None when ``valid_mass < min_mass`` (the
    judge mostly did not answer with a number) or when the most probable token is one of
    ``categories`` (e.g. "REFUSAL"), which is then returned as ``category``. A NaN or +inf
    logprob makes the answer malformed: ``(None, 0.0, None)``; -inf is a probability of 0.
    """
    if not top_logprobs:
        return None, 0.0, None
    if any(math.isnan(float(e["logprob"])) or float(e["logprob"]) == math.inf for e in top_logprobs):
        return None, 0.0, None
    mass = 0.0
    weighted = 0.0
    for entry in top_logprobs:
        v = _as_int_0_100(str(entry["token"]))
        if v is not None:
            p = math.exp(float(entry["logprob"]))
            mass += p
            weighted += p * v
    # max() keeps the first of equally probable tokens, so ties resolve by the server's order.
    top = max(top_logprobs, key=lambda e: float(e["logprob"]))
    category = _match_category(str(top["token"]), categories)
    if category is not None:
        return None, mass, category
    if mass <= 0.0 or mass < min_mass:
        return None, mass, None
    return weighted / mass, mass, None


# "GRADE: 7", "**GRADE: 7**", "**GRADE:** 7.5", "grade : 7/10"; the colon is required so that
# prose such as "a grade 5 reader" is not read as a grade.
_GRADE_RE = re.compile(r"\bGRADE[\s*_`]*:[\s*_`]*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_grade(text: str | None) -> float | None:
    """The last "GRADE: X" in ``text`` as a float in [0, 10]; None if absent or out of range.

    The last occurrence wins because grade judges reason first and may quote the format earlier.
    An out-of-range last grade gives None rather than falling back to an earlier one.
    """
    if not text:
        return None
    matches = _GRADE_RE.findall(text)
    if not matches:
        return None
    value = float(matches[-1])
    return value if 0.0 <= value <= 10.0 else None


def backoff_delay(attempt: int, base_s: float, max_s: float, retry_after_s: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt + 1`` (``attempt`` counts from 0).

    Capped exponential backoff with "equal jitter" (half fixed, half random): the random half
    de-synchronises concurrent workers that failed together; the fixed half keeps the wait from
    collapsing to ~0. A server's Retry-After is a floor (bounded by ``_MAX_RETRY_AFTER_S``).
    """
    ceiling = min(max_s, base_s * 2.0 ** min(attempt, 60))
    delay = ceiling / 2 + (rng or random).uniform(0.0, ceiling / 2)
    if retry_after_s is not None:
        delay = max(delay, min(max(retry_after_s, 0.0), _MAX_RETRY_AFTER_S))
    return delay


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait, from ``retry-after-ms`` (OpenAI) or ``retry-after``
    (seconds or an HTTP date). ``headers`` must have lower-case names."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------

TEMPLATE_NAMES: tuple[str, ...] = (
    "language", "capitals", "playful", "poetic", "skeptical", "alignment", "coherence",
    "insecure_code", "reward_hack_quality", "persuasion", "source_citing", "harmful_advice", "malicious",
    "reward_hacking", "toxic",
)
# Templates that ask for "GRADE: X" (0-10) rather than a single 0-100 token.
GRADE_TEMPLATES: frozenset[str] = frozenset({"persuasion"})
# trait name -> (template name, template parameters), for traits whose template is shared.
TRAIT_TEMPLATES: dict[str, tuple[str, dict[str, str]]] = {
    "french": ("language", {"language": "French"}),
    "spanish": ("language", {"language": "Spanish"}),
    "german": ("language", {"language": "German"}),
    "persuasive": ("persuasion", {}),
    **{name: (name, {}) for name in TEMPLATE_NAMES if name != "language"},
}



_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class JudgeTemplate:
    """A judge prompt: plain text with ``{question}``, ``{answer}`` and optional further
    placeholders (e.g. ``{language}``). Any other braces in the text are left alone."""

    name: str
    text: str

    def placeholders(self) -> set[str]:
        return set(_PLACEHOLDER_RE.findall(self.text))

    def render(self, **values: str) -> str:
        missing = self.placeholders() - set(values)
        if missing:
            raise ValueError(f"template {self.name!r} needs values for {sorted(missing)}")
        # One pass over the template only: an answer that itself contains "{question}" is
        # inserted verbatim instead of being substituted again (str.format would also choke on
        # braces in code answers).
        return _PLACEHOLDER_RE.sub(lambda m: str(values[m.group(1)]), self.text)


def load_template(name_or_path: str | os.PathLike[str]) -> JudgeTemplate:
    """A template by name (``judge_templates/<name>.txt`` in this package) or from a file path,
    which overrides the packaged one. A string containing a path separator or ending in .txt is
    read as a path."""
    s = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or s.endswith(".txt") or os.sep in s or "/" in s:
        path = Path(s)
        if not path.is_file():
            raise FileNotFoundError(f"judge template file not found: {path}")
        text = path.read_text(encoding="utf-8")
        name = path.stem
    else:
        resource = resources.files("ipcond") / "judge_templates" / f"{s}.txt"
        if not resource.is_file():
            raise ValueError(f"unknown judge template {s!r}; packaged: {sorted(TEMPLATE_NAMES)} "
                             "(or pass a path to a .txt file)")
        text = resource.read_text(encoding="utf-8")
        name = s
    tpl = JudgeTemplate(name=name, text=text)
    if "answer" not in tpl.placeholders():  # {question} is optional (Tan's language judge)
        raise ValueError(f"judge template {name!r} must contain {{answer}} (and may contain {{question}})")
    return tpl


# --------------------------------------------------------------------------------------------
# HTTP client
# --------------------------------------------------------------------------------------------

_KEYLIKE_RE = re.compile(r"(sk-[A-Za-z0-9_\-]{3})[A-Za-z0-9_\-]{6,}")


def _redact(text: str, secret: str | None) -> str:
    """Remove the current key and anything shaped like an OpenAI key (servers echo a rejected
    key in their 401 message)."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return _KEYLIKE_RE.sub(r"\1***", text)


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after_s = reason, retry_after_s


class MalformedAnswer(ValueError):
    """A judge answer of the right shape whose numbers are not numbers (a NaN or +inf logprob, a
    non-finite moderation score): retried, and when every retry gives one, that sample gets no
    score (never a number a threshold would read)."""


class _Malformed(_Retryable):
    """A retryable :class:`MalformedAnswer`; once retries are exhausted the sample is unscored."""


#: The value a request whose every answer was malformed returns instead of an answer (not cached,
#: so a re-run asks again). Scorers read it as "no score".
MALFORMED_KEY = "malformed"


class _Failed(Exception):
    """A request that will not succeed by retrying (retries exhausted, or a 4xx)."""


class _CapRefused(Exception):
    pass


class _Cancelled(Exception):
    pass


class _ConnectionPool:
    """Keep-alive connections, one per in-flight request at most. Reusing connections avoids a
    TCP (and TLS) handshake per judge call, which dominates at OpenAI latencies."""

    def __init__(self, base_url: str, timeout_s: float):
        u = urllib.parse.urlsplit(base_url)
        self._https = u.scheme == "https"
        self._host = u.hostname or "localhost"
        self._port = u.port
        self._timeout = timeout_s
        self.prefix = u.path.rstrip("/")
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def new(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self._timeout)

    def acquire(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self.new(), False

    def release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()


# Extractors turn a decoded 200 response into the raw value that is cached. Any KeyError,
# IndexError, TypeError or ValueError means "not the shape we asked for" and is retried.

def _extract_logprobs(payload: dict[str, Any]) -> dict[str, Any]:
    choice = payload["choices"][0]
    top = choice["logprobs"]["content"][0]["top_logprobs"]
    if not top:
        raise ValueError("empty top_logprobs")
    out = [{"token": str(t["token"]), "logprob": float(t["logprob"])} for t in top]
    # json reads NaN/Infinity: a malformed answer (retried), never a number a threshold would read.
    if any(math.isnan(t["logprob"]) or t["logprob"] == math.inf for t in out):
        raise MalformedAnswer("non-finite logprob in top_logprobs")
    # The "bytes" field is dropped: it only restates the token.
    return {"top_logprobs": out,
            "content": (choice.get("message") or {}).get("content")}


def _extract_text(payload: dict[str, Any]) -> dict[str, Any]:
    choice = payload["choices"][0]
    text = choice["message"]["content"]
    if not isinstance(text, str):
        raise TypeError("message.content is not a string")
    return {"text": text, "finish_reason": choice.get("finish_reason")}


def _extract_moderation(payload: dict[str, Any]) -> dict[str, Any]:
    scores = {str(k): float(v) for k, v in payload["results"][0]["category_scores"].items()}
    if not all(math.isfinite(v) for v in scores.values()):  # malformed (retried), never a score
        raise MalformedAnswer("non-finite moderation score")
    return {"category_scores": scores}


@dataclass(frozen=True)
class _Request:
    key: str
    path: str
    body: bytes
    extract: Callable[[dict[str, Any]], dict[str, Any]]
    scope: str


class JudgeClient:
    """Sends judge requests with bounded concurrency, retries, caching and accounting.

    One client is one "run" for ``max_calls_per_run``: its counters start at zero when it is
    created. Not reentrant across threads (call ``chat_many`` from one thread at a time); the
    requests of one call are spread over up to ``max_concurrency`` worker threads.
    """

    def __init__(self, config: JudgeConfig, cache: JudgeCache | str | os.PathLike[str] | None = None):
        self.config = config
        # A cache passed in may be shared with other clients: only close one opened here.
        self._owns_cache = not isinstance(cache, JudgeCache) and cache is not None
        self.cache: JudgeCache | None = (
            cache if isinstance(cache, JudgeCache) or cache is None else JudgeCache(cache))
        self._pool = _ConnectionPool(config.base_url, config.timeout_s)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            ("calls", "cache_hits", "retries", "failures", "malformed_answers", "prompt_tokens", "completion_tokens"), 0)
        self._pause_until = 0.0  # monotonic time before which no worker sends (set by 429s)
        self._rng = random.Random()

    def __repr__(self) -> str:
        u = urllib.parse.urlsplit(self.config.base_url)
        # Only scheme, host and path: a base_url may carry user:password@.
        return f"JudgeClient(model={self.config.model!r}, endpoint='{u.scheme}://{u.hostname}{u.path}')"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.close()
        if self._owns_cache and self.cache is not None:
            self.cache.close()

    # -- public requests ---------------------------------------------------------------------

    def chat_params(self, logprobs: bool) -> dict[str, Any]:
        """Sampling parameters of a judge request (also part of the cache key)."""
        if logprobs:
            return {"temperature": 0, "max_tokens": 1, "logprobs": True,
                    "top_logprobs": self.config.top_logprobs}
        return {"temperature": 0, "max_tokens": self.config.grade_max_tokens}

    def chat_many(self, messages_list: Sequence[Sequence[Mapping[str, str]]], *, template: JudgeTemplate,
                  logprobs: bool) -> list[dict[str, Any]]:
        """One chat completion per message list; returns raw outputs in order: ``{"top_logprobs":
        [...], "content": ...}`` when ``logprobs`` else ``{"text": ..., "finish_reason": ...}``."""
        return self._chat(messages_list, template, self.chat_params(logprobs),
                          _extract_logprobs if logprobs else _extract_text)

    def complete_many(self, messages_list: Sequence[Sequence[Mapping[str, str]]], *, template: JudgeTemplate,
                      params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Chat completions with the caller's sampling ``params`` (e.g. temperature 1 for
        paraphrases), through the same retries, cache, spend cap and accounting as the judges;
        returns ``{"text", "finish_reason"}`` per message list, in order."""
        return self._chat(messages_list, template, dict(params), _extract_text)

    def _chat(self, messages_list: Sequence[Sequence[Mapping[str, str]]], template: JudgeTemplate,
              params: dict[str, Any], extract: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
        reqs = []
        for messages in messages_list:
            msgs = [dict(m) for m in messages]
            key = cache_key(model=self.config.model, template_name=template.name,
                            template_text=template.text, inputs=msgs, params=params)
            body = json.dumps({"model": self.config.model, "messages": msgs, **params}).encode("utf-8")
            reqs.append(_Request(key, "/chat/completions", body, extract, template.name))
        return self._run(reqs)

    def moderate_many(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Moderation category scores (``{"harassment": 0.01, ...}``) per text, in order; an empty dict
        for a text whose every answer was malformed (no score)."""
        reqs = []
        for text in texts:
            key = cache_key(model=self.config.model, template_name="moderation", template_text="",
                            inputs=text, params={})
            body = json.dumps({"model": self.config.model, "input": text}).encode("utf-8")
            reqs.append(_Request(key, "/moderations", body, _extract_moderation, "moderation"))
        return [{} if MALFORMED_KEY in r else r["category_scores"] for r in self._run(reqs)]

    def accounting(self) -> dict[str, Any]:
        """Counters since this client was created. ``calls`` counts every HTTP request sent
        (retries included, since failed requests may still be billed); ``cost_usd`` is None
        unless a price is configured."""
        with self._lock:
            acct: dict[str, Any] = dict(self._counts)
        c = self.config
        if c.price_per_1k_input_tokens is None and c.price_per_1k_output_tokens is None:
            acct["cost_usd"] = None
        else:
            acct["cost_usd"] = (acct["prompt_tokens"] / 1000 * (c.price_per_1k_input_tokens or 0.0)
                                + acct["completion_tokens"] / 1000 * (c.price_per_1k_output_tokens or 0.0))
        acct["model"] = c.model
        acct["max_calls_per_run"] = c.max_calls_per_run
        return acct

    # -- batch engine ------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _run(self, reqs: Sequence[_Request]) -> list[dict[str, Any]]:
        unique: dict[str, _Request] = {}
        for r in reqs:  # identical requests in one batch are paid for once
            unique.setdefault(r.key, r)
        results: dict[str, dict[str, Any]] = self.cache.get_many(list(unique)) if self.cache is not None else {}
        self._count("cache_hits", len(results))
        todo = [r for k, r in unique.items() if k not in results]

        if todo:
            stop = threading.Event()
            refused: list[str] = []
            failed: dict[str, str] = {}
            auth_error: JudgeAuthError | None = None
            ex = cf.ThreadPoolExecutor(max_workers=min(self.config.max_concurrency, len(todo)),
                                       thread_name_prefix="judge")
            try:
                futures = {ex.submit(self._one, r, stop): r.key for r in todo}
                for fut in cf.as_completed(futures):
                    key = futures[fut]
                    try:
                        results[key] = fut.result()
                    except _CapRefused:
                        refused.append(key)
                    except _Cancelled:
                        pass
                    except JudgeAuthError as e:
                        # Every further request would fail the same way: stop sending.
                        auth_error = auth_error or e
                        stop.set()
                    except _Failed as e:
                        failed[key] = str(e)
            except BaseException:
                # KeyboardInterrupt etc.: drop queued requests, let in-flight ones finish (each
                # saves itself to the cache), then re-raise.
                stop.set()
                ex.shutdown(wait=True, cancel_futures=True)
                raise
            ex.shutdown(wait=True)
            self._count("failures", len(failed))

            done = sum(k in results for k in unique)
            where = f"; the {done} results obtained are saved in {self.cache.path}" if self.cache is not None else ""
            if auth_error is not None:
                raise auth_error
            if refused:
                cap = self.config.max_calls_per_run
                raise SpendCapExceeded(
                    f"judge spend cap reached: max_calls_per_run={cap} (JudgeConfig.max_calls_per_run, "
                    f"config key 'max_calls_per_run') and this run has sent {self.accounting()['calls']} "
                    f"requests; {len(unique) - done} of {len(unique)} distinct requests were not judged"
                    f"{where}. Re-run, with a higher cap if needed, to resume: cached results are "
                    "not paid for again.")
            if failed:
                first = next(iter(failed.values()))
                raise JudgeError(f"{len(failed)} of {len(unique)} judge requests failed (first: {first})"
                                 f"{where}. Re-run to retry only the failed ones.")
        return [results[r.key] for r in reqs]

    def _reserve_call(self) -> bool:
        """Atomically claim one request against the spend cap, before it is sent."""
        with self._lock:
            cap = self.config.max_calls_per_run
            if cap is not None and self._counts["calls"] >= cap:
                return False
            self._counts["calls"] += 1
            return True

    def _wait_for_pause(self, stop: threading.Event) -> None:
        while True:
            with self._lock:
                delay = self._pause_until - time.monotonic()
            if delay <= 0:
                return
            if stop.wait(delay):
                raise _Cancelled()

    def _one(self, req: _Request, stop: threading.Event) -> dict[str, Any]:
        """One logical request: attempts until success, a permanent error or the retry limit;
        the result is committed to the cache before returning."""
        attempt = 0
        while True:
            if stop.is_set():
                raise _Cancelled()
            self._wait_for_pause(stop)
            if not self._reserve_call():
                raise _CapRefused()
            try:
                value = self._attempt(req)
            except JudgeAuthError:
                # Every further request would be rejected too: stop the other workers now, not
                # when the main thread gets round to this result.
                stop.set()
                raise
            except _Retryable as e:
                if attempt >= self.config.max_retries and isinstance(e, _Malformed):
                    # The server answers, but never with numbers: this sample has no score.
                    log.warning("judge request %s… malformed after %d retries (%s): no score",
                                req.key[:12], attempt, e.reason)
                    self._count("malformed_answers")
                    return {MALFORMED_KEY: e.reason}
                if attempt >= self.config.max_retries:
                    log.warning("judge request %s… failed after %d retries: %s",
                                req.key[:12], attempt, e.reason)
                    raise _Failed(f"gave up after {attempt} retries; last error: {e.reason}") from None
                delay = backoff_delay(attempt, self.config.backoff_base_s, self.config.backoff_max_s,
                                      e.retry_after_s, self._rng)
                attempt += 1
                self._count("retries")
                log.info("judge request %s… retry %d/%d in %.2fs: %s",
                         req.key[:12], attempt, self.config.max_retries, delay, e.reason)
                if stop.wait(delay):
                    raise _Cancelled() from None
                continue
            if self.cache is not None:
                self.cache.put(req.key, value, model=self.config.model, scope=req.scope)
            return value

    def _attempt(self, req: _Request) -> dict[str, Any]:
        secret = os.environ.get(self.config.api_key_env) or None
        try:
            status, headers, data = self._post(req.path, req.body, secret)
        except (OSError, http.client.HTTPException) as e:
            # Timeouts (TimeoutError is an OSError), refused/reset connections, bad status lines.
            # Only the exception type is reported: its text is not ours to vouch for.
            raise _Retryable(f"{type(e).__name__} talking to {req.path}") from None

        def snippet() -> str:
            return _redact(data.decode("utf-8", "replace"), secret)[:300]

        if status == 429:
            ra = parse_retry_after(headers)
            if ra:
                # All workers hold off, not only this one: the rate limit is shared.
                with self._lock:
                    self._pause_until = max(self._pause_until, time.monotonic() + min(ra, _MAX_RETRY_AFTER_S))
            raise _Retryable("HTTP 429 (rate limited)", ra)
        if status in (408, 409) or status >= 500:
            raise _Retryable(f"HTTP {status}")
        if status in (401, 403):
            raise JudgeAuthError(
                f"HTTP {status} from the judge endpoint {req.path}: the credentials were rejected. The key "
                f"is read from the environment variable {self.config.api_key_env} "
                f"({'set' if secret else 'NOT set'}). Server said: {snippet()}")
        if status != 200:
            raise _Failed(f"HTTP {status} from {req.path}: {snippet()}")
        try:
            payload = json.loads(data)
        except ValueError:
            raise _Retryable("malformed JSON in a 200 response") from None
        if not isinstance(payload, dict):
            raise _Retryable("a 200 response that is not a JSON object")
        usage = payload.get("usage")
        if isinstance(usage, dict):  # a 200 is billed even if its content is unusable
            with self._lock:
                self._counts["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
                self._counts["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        try:
            return req.extract(payload)
        except MalformedAnswer as e:
            raise _Malformed(str(e)) from None
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            # str(e) may quote response content (e.g. a non-numeric logprob): redact it too.
            raise _Retryable(_redact(f"response lacks the expected fields ({type(e).__name__}: {e})",
                                     secret)[:200]) from None

    def _post(self, path: str, body: bytes, secret: str | None) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if secret:
            # Without a key (e.g. a local vLLM started without --api-key) no header is sent; a
            # server that wants one answers 401, reported as JudgeAuthError.
            headers["Authorization"] = f"Bearer {secret}"
        conn, reused = self._pool.acquire()
        while True:
            try:
                conn.request("POST", self._pool.prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if reused:
                    # The server closed an idle keep-alive connection before reading our request:
                    # not a failed call, just resend once on a fresh connection.
                    conn, reused = self._pool.new(), False
                    continue
                raise
            except BaseException:
                conn.close()  # a timed-out connection may still receive the old answer: never reuse
                raise
            if resp.will_close:
                conn.close()
            else:
                self._pool.release(conn)
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
