"""Chat formatting with response masks, trait specifications, and dataset loaders."""

from defense_interp.data.chat import (
    ChatBatch,
    Conversation,
    encode_chat,
    encode_prompts,
    set_thinking,
    with_system_prompt,
)
from defense_interp.data.loaders import InstructionSet, load_chat_jsonl, load_hf_conversations, load_instructions
from defense_interp.data.mixture import Mixture, mixture
from defense_interp.data.refusal import RefusalData
from defense_interp.data.traits import EvalPair, Trait

__all__ = [
    "ChatBatch",
    "Conversation",
    "EvalPair",
    "InstructionSet",
    "Mixture",
    "RefusalData",
    "Trait",
    "encode_chat",
    "encode_prompts",
    "load_chat_jsonl",
    "load_hf_conversations",
    "load_instructions",
    "mixture",
    "set_thinking",
    "with_system_prompt",
]
