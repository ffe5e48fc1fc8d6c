"""Explainers: feature examples -> one-sentence explanation, through the LLM client."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import FeatureData
from workbench.llm import LLMClient


class Explanation(NamedTuple):
    """An explanation and what it cost."""

    text: str
    """Cleaned one-line explanation (see prompts.clean_explanation)."""
    tokens_in: int
    """Prompt tokens over all tries (repairs included)."""
    tokens_out: int
    """Generated tokens over all tries."""
    seconds: float
    """Wall time over all tries."""


class ExplainError(RuntimeError):
    """The explainer never produced a well-formed explanation."""


class Explainer(ABC):
    """Stage ABC: one explanation per feature."""

    name: ClassVar[str]
    prompt_version: ClassVar[str]

    @abstractmethod
    async def explain(self, client: LLMClient, data: FeatureData) -> Explanation:
        """Raise ExplainError (format never right) or LLMError (endpoint failed for good)."""


class DelphiExplainer(Explainer):
    """Delphi's default explainer: marked examples and the tokens they peak on, answer after a fixed marker.

    With `prefill` the reply is prefilled with the marker (for endpoints that continue a final
    assistant message). When a reply is broken (no marker without prefill, or empty or too short)
    the model is shown its reply and a repair message and asked again, up to `repairs` times; so it
    is when the explanation quotes a word that no example contains (`prompts.unseen_quotes`). If
    every try quotes such a word, the last well-formed explanation is kept."""

    name = "delphi"
    prompt_version = prompts.EXPLAIN_VERSION

    def __init__(self, prefill: bool = False, repairs: int = 1, max_tokens: int = 96):
        self.prefill = prefill
        self.repairs = repairs
        self.max_tokens = max_tokens

    async def explain(self, client: LLMClient, data: FeatureData) -> Explanation:
        messages = prompts.explain_messages(data.train)
        prefill = [{"role": "assistant", "content": prompts.MARKER}] if self.prefill else []
        tokens_in = tokens_out = 0
        seconds = 0.0
        answer = None
        for _ in range(self.repairs + 1):
            reply = await client.chat(messages + prefill, max_tokens=self.max_tokens)
            tokens_in, tokens_out, seconds = tokens_in + reply.tokens_in, tokens_out + reply.tokens_out, \
                seconds + reply.seconds
            parsed = prompts.parse_explanation(reply.text, prefilled=self.prefill,
                                               complete=reply.tokens_out < self.max_tokens)
            repair = prompts.REPAIR
            if parsed is not None:
                unseen = prompts.unseen_quotes(parsed, data.train)
                if not unseen:
                    return Explanation(parsed, tokens_in, tokens_out, seconds)
                answer, repair = parsed, prompts.unseen_repair(unseen)
            said = (prompts.MARKER if self.prefill else "") + prompts.plain_text(reply.text)
            messages = [*messages, {"role": "assistant", "content": said or "(no answer)"},
                        {"role": "user", "content": repair}]
        if answer is not None:   # well-formed, but naming a word no example has, after every repair
            return Explanation(answer, tokens_in, tokens_out, seconds)
        raise ExplainError(f"no well-formed explanation after {self.repairs + 1} tries "
                           f"(last reply {reply.text[:120]!r})")
