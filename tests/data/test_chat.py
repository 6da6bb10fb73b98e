"""Chat formatting and response masks."""

import copy

import pytest

import defense_interp as di
from defense_interp.data import encode_chat, encode_prompts, load_hf_conversations
from defense_interp.data.chat import render

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there?"},
    {"role": "assistant", "content": "Hello, friend."},
]


def test_response_mask_covers_exactly_the_answer_and_end_of_turn(tiny):
    b = encode_chat(tiny.tokenizer, [CONV])
    answer = tiny.tokenizer.decode(b.tokens[0][b.response_mask[0]])
    assert answer == "Hello, friend.<|im_end|>"


def test_multi_turn_masks_every_assistant_turn(tiny):
    conv = [*CONV, {"role": "user", "content": "More?"}, {"role": "assistant", "content": "No."}]
    b = encode_chat(tiny.tokenizer, [conv])
    assert tiny.tokenizer.decode(b.tokens[0][b.response_mask[0]]) == "Hello, friend.<|im_end|>No.<|im_end|>"


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_keeps_masks_on_real_tokens(tiny, side):
    short = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    b = encode_chat(tiny.tokenizer, [CONV, short], padding_side=side)
    assert b.tokens.shape[0] == 2 and not (b.response_mask & ~b.attention_mask.bool()).any()
    assert tiny.tokenizer.decode(b.tokens[1][b.response_mask[1]]) == "b<|im_end|>"
    pad_col = 0 if side == "left" else -1
    assert b.attention_mask[1, pad_col] == 0


def test_ip_inserts_its_system_prompt():
    out = di.IP("You are evil.").prepare([CONV])[0]
    assert out[0] == {"role": "system", "content": "You are evil."}
    assert sum(m["role"] == "system" for m in out) == 1 and out[1:] == CONV[1:]


def test_plain_format_without_chat_template(tiny):
    tok = copy.deepcopy(tiny.tokenizer)
    tok.chat_template = None
    text = render(tok, CONV)
    assert text.startswith("### System:\nBe brief.\n\n### User:\nHi there?\n\n### Assistant:\nHello, friend.")
    b = encode_chat(tok, [CONV])
    assert tok.decode(b.tokens[0][b.response_mask[0]]) == "Hello, friend.<|im_end|>"


def test_conversation_without_answer_is_rejected(tiny):
    with pytest.raises(di.DataError, match="no assistant turn"):
        encode_chat(tiny.tokenizer, [CONV[:2]])


def test_empty_dataset_is_rejected(tiny):
    with pytest.raises(di.DataError, match="empty"):
        encode_chat(tiny.tokenizer, [])


def test_prompts_are_left_padded_with_generation_prompt(tiny):
    b = encode_prompts(tiny.tokenizer, [CONV[:2], [{"role": "user", "content": "x"}]])
    assert b.padding_side == "left" and b.attention_mask[:, -1].all()
    assert tiny.tokenizer.decode(b.tokens[0]).endswith("<|im_start|>assistant\n")


def test_builtin_trait_meets_its_schema(trait):
    assert len(trait.pairs) >= 5 and len(trait.questions) >= 20 and len(trait.eval_pairs) >= 20
    assert len(trait.train_data) >= 200
    assert not set(trait.questions) & set(trait.eval_questions)
    assert all(c[-1]["role"] == "assistant" for c in trait.train_data)


def test_persona_vectors_files_load(tmp_path):
    import json

    ext = tmp_path / "evil.json"
    ext.write_text(
        json.dumps(
            {
                "instruction": [{"pos": "Be evil.", "neg": "Be kind."}],
                "questions": ["Q1?", "Q2?"],
                "eval_prompt": "Rate {question} {answer}",
            }
        )
    )
    ev = tmp_path / "evil_eval.json"
    ev.write_text(json.dumps({"instruction": [], "questions": ["E1?"], "eval_prompt": "x"}))
    t = di.Trait.from_persona_vectors_json(ext, ev)
    assert t.name == "evil" and t.pairs == (("Be evil.", "Be kind."),) and t.eval_questions == ("E1?",)
    ext.write_text(json.dumps({"questions": ["Q"]}))
    with pytest.raises(di.DataError, match="instruction"):
        di.Trait.from_persona_vectors_json(ext)


def test_chat_jsonl_and_datasets_load(tmp_path):
    import json

    import datasets

    rows = [{"messages": CONV}, {"messages": CONV[1:]}]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    assert di.load_chat_jsonl(p) == [CONV, CONV[1:]]
    ds = datasets.Dataset.from_list(rows)
    assert load_hf_conversations(ds) == [CONV, CONV[1:]]
    p.write_text('{"messages": [{"role": "user", "content": "x"}]}')
    with pytest.raises(di.DataError, match="no assistant turn"):
        di.load_chat_jsonl(p)


def test_truncation_that_drops_the_whole_answer_is_an_error(tiny):
    b = encode_chat(tiny.tokenizer, [CONV], max_length=52)
    assert b.tokens.shape[1] == 52 and b.response_mask.any()
    with pytest.raises(di.DataError, match="max_length"):
        encode_chat(tiny.tokenizer, [CONV], max_length=10)
