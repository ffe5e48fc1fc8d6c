"""`workbench steer-markup`: FAST's special-token steering (Li, Ye et al. 2025, sec. 5.3).

For each kind of chat markup (the turn start `<|im_start|>`, or a role name such as `assistant`),
the feature with the highest mean, over held-out conversations, of its largest activation on that
markup is picked; then `alpha x` its decoder direction is added to the residual stream at every
position while the model answers held-out questions greedily with its chat template, for each
alpha of a grid (alpha 0 is the unchanged model). The answers are stored
(`steering_generations`) and the app's Steering tab shows them side by side. The paper's reading
is qualitative: moderate alpha improves answers, large alpha degrades them into repetition.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench import corpora
from workbench.activations import hook_activations, merge_heads
from workbench.config import comma_list, config_id, require_positive, to_dict
from workbench.evaluation.chat import ROLES, ChatMarkup, chat_markup, role_starts
from workbench.generation import greedy_continuation, prompt_tokens
from workbench.hooks import steer
from workbench.registered import load_registered
from workbench.store import Store

TURN_START = "turn_start"


@dataclass
class SteerMarkupConfig:
    """Steer a dictionary's markup features and store the answers."""

    dict_id: str = ""
    """Dictionary whose features steer (trained on a chat model's residual stream)."""
    corpus: str = "sharegpt"
    """Chat corpus whose held-out conversations pick the features and give the questions."""
    markup: list[str] = field(default_factory=lambda: [TURN_START, "assistant"])
    """Markup kinds to steer: turn_start and/or role names (system, user, assistant)."""
    selection_conversations: int = 200
    """Held-out conversations whose markup picks each kind's feature (the paper uses 1,000)."""
    selection_context: int = 512
    """Tokens read per selection conversation."""
    questions: int = 10
    """Held-out questions answered at every alpha (the paper's 10)."""
    max_question_chars: int = 300
    """Questions are first user turns of at most this many characters."""
    alphas: list[float] = field(default_factory=lambda: [0.0, 15.0, 25.0, 50.0, 100.0, 150.0, 200.0])
    """Steering strengths (the paper's grid); 0 is the unchanged model."""
    max_new_tokens: int = 48
    """Tokens generated per answer."""
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.dict_id:
            raise ValueError("give dict_id")
        self.markup = comma_list(self.markup)
        self.alphas = [float(a) for a in comma_list([str(a) for a in self.alphas])]
        unknown = sorted(set(self.markup) - {TURN_START, *ROLES})
        if unknown or not self.markup:
            raise ValueError(f"markup kinds must be among {TURN_START}, {', '.join(ROLES)}; got {unknown or 'none'}")
        if not self.alphas or not all(math.isfinite(a) for a in self.alphas):
            raise ValueError(f"alphas must be finite numbers, got {self.alphas}")
        require_positive(self, "selection_conversations", "selection_context", "questions", "max_question_chars",
                         "max_new_tokens")

    def run_id(self) -> str:
        return config_id(f"steer-markup-{self.dict_id}", {k: v for k, v in to_dict(self).items() if k != "progress"})


def markup_positions(ids: torch.Tensor, markup: ChatMarkup, kind: str) -> list[int]:
    """Positions (after position 0, the sequence's own start) of one markup kind in a sequence."""
    if kind == TURN_START:
        return [p for p in (ids == markup.turn_start).nonzero().flatten().tolist() if p > 0]
    return [p for p in role_starts(ids, markup)[kind] if p > 0]


def select_features(sae, loaded, conversations: list[torch.Tensor], markup: ChatMarkup,
                    kinds: list[str]) -> dict[str, tuple[int, float]]:
    """Kind -> (feature, its mean over conversations of the largest activation on that kind)."""
    totals = {kind: torch.zeros(sae.d_sae) for kind in kinds}
    counts = dict.fromkeys(kinds, 0)
    with torch.no_grad():
        for ids in conversations:
            wanted = {kind: markup_positions(ids, markup, kind) for kind in kinds}
            if not any(wanted.values()):
                continue
            acts = merge_heads(hook_activations(loaded, sae.hook_point, ids[None]), sae.hook_point)[0]
            for kind, positions in wanted.items():
                if positions:
                    totals[kind] += sae.encode(acts[positions]).dense().max(0).values
                    counts[kind] += 1
    missing = [kind for kind in kinds if counts[kind] == 0]
    if missing:
        raise ValueError(f"no selection conversation contains markup {missing}")
    return {kind: (int((totals[kind] / counts[kind]).argmax()), float((totals[kind] / counts[kind]).max()))
            for kind in kinds}


def held_out_questions(cfg: SteerMarkupConfig, skip: int) -> list[str]:
    """First user turns of eval-split conversations after the first `skip` (those picked features)."""
    docs = corpora.load_corpus(cfg.corpus, "eval")
    if docs["messages"].isna().any():
        raise ValueError(f"corpus {cfg.corpus!r} is not a chat corpus")
    found = []
    for messages in docs["messages"].iloc[skip:]:
        first = next((t["content"] for t in json.loads(messages) if t["role"] == "user"), "")
        if 0 < len(first) <= cfg.max_question_chars:
            found.append(first)
        if len(found) == cfg.questions:
            return found
    raise ValueError(f"the eval split of {cfg.corpus} has only {len(found)} usable questions; {cfg.questions} wanted")


def run(cfg: SteerMarkupConfig, store: Store, progress: bool = True) -> str:
    """Pick the features, generate every (kind, alpha, question) answer, store them."""
    run_id = cfg.run_id()
    if store.finished(run_id):
        return run_id
    reg = load_registered(store, cfg.dict_id)
    loaded, sae = reg.model, reg.dictionary
    markup = chat_markup(loaded.tokenizer)
    texts = corpora.document_texts(corpora.load_corpus(cfg.corpus, "eval").head(cfg.selection_conversations),
                                   loaded.tokenizer)
    questions = held_out_questions(cfg, cfg.selection_conversations)
    with store.running(run_id, "steer-markup", to_dict(cfg)):
        conversations = list(corpora.chat_sequences(texts, loaded.tokenizer, cfg.selection_context))
        chosen = select_features(sae, loaded, conversations, markup, cfg.markup)
        rows = _answers(cfg, loaded, sae, chosen, questions, progress and cfg.progress)
        frame = pd.DataFrame(rows)
        frame.insert(0, "run_id", run_id)
        frame["created_at"] = pd.Timestamp.now(tz="UTC").tz_localize(None)
        store.publish(run_id, {"steering_generations": frame})
    for kind, (feature, mean_max) in chosen.items():
        print(f"{kind}: feature {feature} (mean max activation {mean_max:.2f})")
    return run_id


def _answers(cfg: SteerMarkupConfig, loaded, sae, chosen: dict[str, tuple[int, float]], questions: list[str],
             progress: bool) -> list[dict]:
    tokens = [prompt_tokens(loaded, q, chat=True) for q in questions]
    unsteered = [greedy_continuation(loaded, t, cfg.max_new_tokens) for t in tokens] if 0.0 in cfg.alphas else []
    bar = tqdm(total=len(chosen) * len(cfg.alphas) * len(questions), disable=not progress, desc="steer markup")
    rows = []
    for kind, (feature, _) in chosen.items():
        for alpha in cfg.alphas:
            for i, question in enumerate(questions):
                if alpha == 0.0:
                    answer = unsteered[i]
                else:
                    with steer(loaded.model, sae, {feature: alpha}):
                        answer = greedy_continuation(loaded, tokens[i], cfg.max_new_tokens)
                rows.append({"dict_id": cfg.dict_id, "markup": kind, "feature": feature, "alpha": alpha,
                             "question_id": i, "question": question, "answer": answer})
                bar.update(1)
    bar.close()
    return rows
