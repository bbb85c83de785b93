"""Token accounting under the target model's tokenizer, as dataset sizes are reported: every token
of a record (prompt and response, or the whole document) counts toward the budget; the loss-bearing
count (assistant tokens for chats, all tokens for documents) is reported beside it."""

from __future__ import annotations

from typing import Any

from teachwhy.data.records import tools_of
from teachwhy.models import training_chat_template  # defined with the models that carry it

__all__ = ["TokenCounter", "training_chat_template"]


class TokenCounter:
    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.template = training_chat_template()

    def count(self, record: dict[str, Any]) -> tuple[int, int]:
        """(all tokens, loss-bearing tokens) of a record."""
        if "messages" in record:
            out = self.tok.apply_chat_template(
                record["messages"], tools=tools_of(record) or None, chat_template=self.template,
                tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
            return len(out["input_ids"]), int(sum(out["assistant_masks"]))
        n = len(self.tok(record["text"], add_special_tokens=False)["input_ids"]) + 1  # + end of text
        return n, n
