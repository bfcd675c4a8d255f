"""Tokens as they are decoded: Request.on_token / Request.stop, and TextStream's whole-character pieces."""

import random

from inference_support import random_image

from unimedvl.inference.inferencer import Request
from unimedvl.inference.streaming import REPLACEMENT, TextStream


def test_on_token_hears_every_token_in_order_without_changing_results(api):
    inf = api.inferencer
    heard = {0: [], 1: []}
    plain = [
        Request([random_image(40, 40, 0), "What is this?"], max_new_tokens=9),
        Request([random_image(32, 48, 1), "Where is the lesion?"], max_new_tokens=7, temperature=0.9, seed=3),
    ]
    hooked = [
        Request(
            r.inputs, max_new_tokens=r.max_new_tokens, temperature=r.temperature, seed=r.seed, on_token=heard[i].append
        )
        for i, r in enumerate(plain)
    ]
    expected = [inf.run([r])[0] for r in plain]
    got = inf.run(hooked)  # batched, with the hooks
    for i in range(2):
        assert got[i].token_ids == expected[i].token_ids
        assert heard[i] == got[i].token_ids


def test_stop_ends_one_answer_and_leaves_its_batch_mates_alone(api):
    inf = api.inferencer
    image, question = random_image(40, 40, 2), "Describe the findings."
    count = {"n": 0}

    def stop_after_three() -> bool:
        count["n"] += 1
        return count["n"] >= 3

    alone = inf.run([Request([image, question], max_new_tokens=12)])[0]
    stopped, other = inf.run(
        [
            Request([image, question], max_new_tokens=12, stop=stop_after_three),
            Request([image, question], max_new_tokens=12),
        ]
    )
    assert len(alone.token_ids) == 12  # the debug model does not end on its own this soon
    assert stopped.token_ids == alone.token_ids[:3]
    assert other.token_ids == alone.token_ids


def test_prompt_tokens_count_the_context_of_the_answer(api):
    inf = api.inferencer
    short = inf.run([Request(["Hi."], max_new_tokens=2)])[0]
    longer = inf.run([Request(["Hi.", "A second, longer text block here."], max_new_tokens=2)])[0]
    assert short.prompt_tokens == len(api.tokenizer.encode("Hi.")) + 2  # <|im_start|> text <|im_end|>
    assert longer.prompt_tokens > short.prompt_tokens


def _pieces(decode, ids):
    stream = TextStream(decode)
    return [stream.push(i) for i in ids] + [stream.finish()]


def test_text_stream_holds_back_incomplete_characters(api):
    tok = api.tokenizer
    text = "héllo 中文 🎉 ünïcödé 🫀 end"
    ids = tok.encode(text)
    assert any(REPLACEMENT in tok.decode([i]) for i in ids)  # some tokens are parts of a character
    pieces = _pieces(tok.decode, ids)
    assert "".join(pieces) == text
    assert not any(REPLACEMENT in p for p in pieces)
    assert "中" in pieces and "🎉" in pieces  # each comes out whole, with the token that completes it


def test_text_stream_joins_to_the_full_decode_of_any_tokens(api):
    tok = api.tokenizer
    for seed in range(200):  # random ids include bytes that never form a character
        rng = random.Random(seed)
        ids = [rng.randrange(len(tok)) for _ in range(rng.randrange(1, 40))]
        assert "".join(_pieces(tok.decode, ids)) == tok.decode(ids), seed
