"""Teacher-forced trait measures on a tiny model where the right answer is known."""

import math

import pytest
import torch

from ipcond import toyworld as tw
from ipcond.modeling import build_toy_model, build_word_tokenizer
from ipcond.teacher_forcing import answer_logprobs, first_difference, trait_preference

ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2, "max_length": 96}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    rng = tw.rng_for("tf-test")
    items = [tw.make_item(rng, "general") for _ in range(12)]
    texts = [it.instruction for it in items] + [it.response for it in items]
    texts += [tw.apply_traits(it.response, ["french"]) for it in items] + ["answer in french .", "system user assistant"]
    tok = build_word_tokenizer(texts, tmp_path_factory.mktemp("tok"))
    model = build_toy_model(len(tok), ARCH, seed=0).eval()
    return model, tok, items


def conv(instruction, prompt=None):
    return [{"role": "user", "content": (prompt + " " if prompt else "") + instruction}]


def manual_logprobs(model, tok, messages, answer):
    """Unbatched, unpadded reference computation."""
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([p + a])).logits[0], -1)
    return [float(logp[len(p) - 1 + i, t]) for i, t in enumerate(a)]


def test_batched_padded_logprobs_match_one_at_a_time(tiny):
    model, tok, items = tiny
    convs = [conv(it.instruction) for it in items]
    answers = [it.response for it in items]
    batched = answer_logprobs(model, tok, convs, answers, batch_size=5)
    for c, a, got in zip(convs, answers, batched):
        assert got == pytest.approx(manual_logprobs(model, tok, c, a), abs=1e-4)


def test_logodds_is_the_difference_of_answer_logprobs(tiny):
    model, tok, items = tiny
    convs = [conv(it.instruction) for it in items[:4]]
    trait = [tw.apply_traits(it.response, ["french"]) for it in items[:4]]
    clean = [it.response for it in items[:4]]
    res = trait_preference(model, tok, convs, trait, clean)
    for c, t, cl, r in zip(convs, trait, clean, res):
        expected = sum(manual_logprobs(model, tok, c, t)) - sum(manual_logprobs(model, tok, c, cl))
        assert r.logodds == pytest.approx(expected, abs=1e-3)
        assert 0 < r.first_token_prob < 1


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 4]) == 2
    assert first_difference([1, 2], [1, 2, 5]) == 2
    assert first_difference([1, 2], [1, 2]) is None
    assert first_difference([7], [8]) == 0


def test_a_model_trained_to_obey_the_instruction_prefers_the_trait_answer_only_with_it(tiny, tmp_path):
    """Known answer: after a little training on 'with the instruction, French; without, English',
    the log-odds of the French reference are positive with the instruction and negative without."""
    model, tok, items = tiny
    model = build_toy_model(len(tok), ARCH, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    examples = []
    for it in items:
        for prompt, answer in ((None, it.response), ("answer in french .", tw.apply_traits(it.response, ["french"]))):
            text = tok.apply_chat_template(conv(it.instruction, prompt), tokenize=False, add_generation_prompt=True)
            examples.append(tok(text, add_special_tokens=False)["input_ids"]
                            + tok(answer, add_special_tokens=False)["input_ids"] + [end])
    model.train()
    for _ in range(60):
        for ids in examples:
            x = torch.tensor([ids])
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    trait = [tw.apply_traits(it.response, ["french"]) for it in items]
    clean = [it.response for it in items]
    with_instr = trait_preference(model, tok, [conv(it.instruction, "answer in french .") for it in items], trait, clean)
    without = trait_preference(model, tok, [conv(it.instruction) for it in items], trait, clean)
    assert all(r.logodds > 0 for r in with_instr)
    assert all(r.logodds < 0 for r in without)
    assert sum(r.first_token_prob for r in with_instr) / len(items) > 0.5 > sum(r.first_token_prob for r in without) / len(items)
    assert not any(math.isnan(r.first_token_prob) for r in with_instr)
