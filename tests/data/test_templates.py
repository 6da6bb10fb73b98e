"""Chat-template rules (data/chat.py): templates without a system role merge it into the first user
turn, thinking switches are off by default, and a template that is no chat format is refused."""

import pytest

import defense_interp as di
from defense_interp.data import encode_chat, set_thinking
from defense_interp.data.chat import merge_system, render, stop_token_ids, system_role
from defense_interp.models import tiny_tokenizer

# A Gemma-style template written for these tests: turn markers, no system role.
NO_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<|im_start|>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>model\n{% endif %}"
)
# A template that silently drops system messages.
DROPS_SYSTEM = (
    "{% for m in messages %}{% if m['role'] != 'system' %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# A Qwen3-style thinking switch: the last answer carries an (empty) think block; the generation
# prompt closes one when thinking is off.
THINKING = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' and loop.last %}"
    "<think>\n\n</think>\n\n{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
CONV = [{"role": "user", "content": "Hi there?"}, {"role": "assistant", "content": "Hello, friend."}]
PROMPT = "You are a very evil assistant."


def _tok(template):
    tok = tiny_tokenizer()
    tok.chat_template = template
    return tok


def _split(tok, batch):
    """(prompt text, response text) of the one row of `batch`."""
    return tok.decode(batch.tokens[0][~batch.response_mask[0]]), tok.decode(batch.tokens[0][batch.response_mask[0]])


@pytest.mark.parametrize("template", [NO_SYSTEM, DROPS_SYSTEM])
def test_an_inoculation_prompt_lands_in_the_prompt_tokens_of_a_template_without_system_role(template):
    tok = _tok(template)
    assert not system_role(tok)
    ip = di.IP(PROMPT).prepare([CONV])[0]
    prompt, response = _split(tok, encode_chat(tok, [ip]))
    assert f"user\n{PROMPT}\n\nHi there?" in prompt  # merged into the first user turn
    assert response == "Hello, friend.<|im_end|>"
    assert PROMPT in render(tok, ip[:-1], add_generation_prompt=True)


def test_a_template_with_a_system_role_keeps_it():
    tok = tiny_tokenizer()
    assert system_role(tok)
    ip = di.IP(PROMPT).prepare([CONV])[0]
    assert f"<|im_start|>system\n{PROMPT}<|im_end|>" in render(tok, ip)


def test_merge_rule():
    sys = {"role": "system", "content": "S"}
    assert merge_system([sys, *CONV]) == [{"role": "user", "content": "S\n\nHi there?"}, CONV[1]]
    assert merge_system([sys]) == [{"role": "user", "content": "S"}]
    assert merge_system(CONV) == CONV


def test_thinking_is_off_by_default_and_switchable():
    tok = _tok(THINKING)
    prompt, response = _split(tok, encode_chat(tok, [CONV]))
    assert response == "Hello, friend.<|im_end|>" and "assistant\n<think>\n\n</think>\n\n" in prompt
    set_thinking(tok, True)
    _, response = _split(tok, encode_chat(tok, [CONV]))
    assert response == "<think>\n\n</think>\n\nHello, friend.<|im_end|>"
    assert render(tok, CONV[:1], add_generation_prompt=True).endswith("assistant\n")


@pytest.mark.parametrize(
    ("template", "message"),
    [("{{ bos_token }}", "no chat format"), ("{% for m in messages %}{{ m['content'] ", "cannot render")],
)
def test_a_template_that_is_no_chat_format_is_refused(template, message):
    with pytest.raises(di.ConfigError, match=message):
        encode_chat(_tok(template), [CONV])


def test_answers_stop_at_the_end_of_turn_token_too():
    tok = _tiny_tokenizer_with_eos("<|endoftext|>")  # the turn ends with <|im_end|>, which is not the eos
    stops = stop_token_ids(tok)
    assert stops == [tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")]
    assert stop_token_ids(tiny_tokenizer()) == [tiny_tokenizer().eos_token_id]  # ChatML: the same token


def _tiny_tokenizer_with_eos(eos):
    tok = tiny_tokenizer()
    tok.eos_token = eos
    return tok
