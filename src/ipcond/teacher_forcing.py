"""Teacher-forced trait measures: how much the model prefers a trait-expressing answer.

Sampled trait rates saturate and flip within a few steps; the log-probability a model gives to a
reference answer that expresses a trait, against a trait-free reference answer to the same
instruction, moves smoothly and needs no sampling and no judge. Two measures per example:

- ``logodds``: log p(trait reference | prompt) - log p(trait-free reference | prompt), in nats,
  summed over the answer's tokens (the end-of-turn token included, so both answers are complete);
- ``first_token_prob``: the probability of the trait reference's token at the first position
  where the two references differ, given their common prefix (for a style marker or a language,
  the first word that shows the trait).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class ForcedResult:
    logodds: float
    first_token_prob: float


def answer_logprobs(model: Any, tokenizer: Any, conversations: Sequence[list[dict]], answers: Sequence[str],
                    batch_size: int = 64) -> list[list[float]]:
    """Per-token log-probabilities of each answer (plus the end-of-turn token) after its conversation.

    The prompt is the chat template with the generation prompt; the answer is tokenised on its own
    and appended, as the chat template would render the assistant turn.
    """
    import torch

    end = "<|im_end|>"
    prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    pairs = []
    for p, a in zip(prompts, answers, strict=True):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids(end)]
        pairs.append((p_ids, a_ids))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[list[float]] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        seqs = [p + a for p, a in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):  # left padding: every answer ends at the last position
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
        # Positions as in an unpadded run; only the last `keep` positions' logits are computed
        # (the lm head over the whole vocabulary at every position is most of the cost).
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(len(a) for _, a in chunk) + 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device), logits_to_keep=keep).logits.float()
        logp = torch.log_softmax(logits, dim=-1).cpu()
        for i, (_, a) in enumerate(chunk):
            # The token at position t is predicted by the logits at position t - 1; the kept
            # logits are positions width-keep .. width-1, and the answer is the last len(a) tokens.
            rows = torch.arange(keep - len(a) - 1, keep - 1)
            out.append(logp[i, rows, torch.tensor(a)].tolist())
    return out


def trait_preference(model: Any, tokenizer: Any, conversations: Sequence[list[dict]],
                     trait_answers: Sequence[str], clean_answers: Sequence[str],
                     batch_size: int = 64) -> list[ForcedResult]:
    """Log-odds of the trait reference over the trait-free one, and the first differing token's
    probability, for each conversation."""
    trait_lp = answer_logprobs(model, tokenizer, conversations, trait_answers, batch_size)
    clean_lp = answer_logprobs(model, tokenizer, conversations, clean_answers, batch_size)
    results = []
    for t_answer, c_answer, t_lp, c_lp in zip(trait_answers, clean_answers, trait_lp, clean_lp, strict=True):
        t_ids = tokenizer(t_answer, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(c_answer, add_special_tokens=False)["input_ids"]
        k = first_difference(t_ids, c_ids)
        first = math.exp(t_lp[k]) if k is not None else float("nan")
        results.append(ForcedResult(logodds=sum(t_lp) - sum(c_lp), first_token_prob=first))
    return results


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first position where two token sequences differ (None if identical)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def trait_preferences(model: Any, tokenizer: Any, conversations: Sequence[list[dict]],
                      trait_answers: dict[str, Sequence[str]], clean_answers: Sequence[str],
                      batch_size: int = 64) -> dict[str, list[ForcedResult]]:
    """:func:`trait_preference` for several traits at once: the trait-free reference is scored
    once and every answer goes through the model in the same batches."""
    names = list(trait_answers)
    n = len(conversations)
    all_lp = answer_logprobs(model, tokenizer, list(conversations) * (len(names) + 1),
                             [a for t in names for a in trait_answers[t]] + list(clean_answers), batch_size)
    clean_lp = all_lp[len(names) * n:]
    out: dict[str, list[ForcedResult]] = {}
    for k, trait in enumerate(names):
        results = []
        for i in range(n):
            t_lp = all_lp[k * n + i]
            t_ids = tokenizer(trait_answers[trait][i], add_special_tokens=False)["input_ids"]
            c_ids = tokenizer(clean_answers[i], add_special_tokens=False)["input_ids"]
            j = first_difference(t_ids, c_ids)
            results.append(ForcedResult(logodds=sum(t_lp) - sum(clean_lp[i]),
                                        first_token_prob=math.exp(t_lp[j]) if j is not None else float("nan")))
        out[trait] = results
    return out
