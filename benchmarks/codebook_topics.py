"""Topic steering with codebook features on SmolLM2 (issue #17; the paper's TinyStories experiment,
arXiv:2310.17230 section 5): find each BBC topic's codes by activation contrast, force them while
sampling, and count how often a held-out topic classifier labels the generations with that topic.

    .venv/bin/workbench codebooks --name smollm2-bbc-codebooks     # the variant (defaults)
    .venv/bin/python benchmarks/codebook_topics.py --variant smollm2-bbc-codebooks

Topic codes: each code's firing rate on the tokens of the topic's BBC train documents minus its
rate on the other topics' tokens (`code_contrast`); per head (group), its k codes with the largest
difference (`strongest_codes_by_group`). Steering overwrites all k slots of a head with its topic
codes at every position of prompt and continuation, as the paper patches 8 "dragon" codes into one
head: strength `one head` patches the most topic-specific head of each codebook, `every head` all
heads of every codebook. Generation: `--prompts` neutral openings, `--samples` samples each at
temperature 1 (no top-k or top-p), `--new-tokens` tokens, through the Hugging Face model with the
codebooks inserted (`inserted_hf`; TransformerLens's generate is ~20x slower here). Classifier:
MiniLM embeddings + logistic regression fitted on the BBC eval split (documents the finetune never
saw; its cross-validated accuracy is printed).
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from transformers import AutoModelForCausalLM, AutoTokenizer

from workbench import codebooks, corpora, embedding
from workbench.store import Store
from workbench.variants import variant_path

PROMPTS = ["The", "Yesterday", "In a statement,", "According to", "It was announced that", "This week",
           "A new report", "On Monday", "Experts say", "The latest"]
STRENGTHS = {"one head": 1, "every head": None}
"""Heads patched per codebook (None: all)."""


@torch.no_grad()
def topic_contrasts(hf, tokenizer, cbs: list, docs: int, context: int) -> dict[str, dict[str, torch.Tensor]]:
    """topic -> hook point -> each code's firing-rate difference (the topic's train tokens vs the rest)."""
    train = corpora.load_corpus("bbc", "train")
    ids: dict[str, list[torch.Tensor]] = {cb.hook_point: [] for cb in cbs}
    labels: list[str] = []
    with codebooks.inserted_hf(hf, cbs) as insertion:
        for label, group in train.groupby("label"):
            for text in group["text"].head(docs):
                tokens = tokenizer(text, return_tensors="pt").input_ids[:, :context]
                hf(input_ids=tokens)
                for hook_point, chosen in insertion.ids.items():
                    ids[hook_point].append(chosen[0])
                labels += [str(label)] * tokens.shape[1]
    label_array = np.array(labels)
    return {topic: {cb.hook_point: codebooks.code_contrast(torch.cat(ids[cb.hook_point]),
                                                           torch.from_numpy(label_array == topic), cb.d_sae)
                    for cb in cbs}
            for topic in sorted(set(labels))}


@torch.no_grad()
def generate(hf, tokenizer, prompt: str, samples: int, new_tokens: int, seed: int) -> list[str]:
    torch.manual_seed(seed)
    tokens = tokenizer(prompt, return_tensors="pt").input_ids.repeat(samples, 1)
    out = hf.generate(tokens, attention_mask=torch.ones_like(tokens), do_sample=True, temperature=1.0, top_k=0,
                      top_p=1.0, max_new_tokens=new_tokens, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.batch_decode(out, skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="smollm2-bbc-codebooks")
    parser.add_argument("--docs", type=int, default=40, help="train documents per topic for the contrast")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=40)
    args = parser.parse_args()

    folder = variant_path(Store(), args.variant)
    if folder is None:
        parser.error(f"no variant named {args.variant!r} in the store: run `workbench codebooks --name {args.variant}`")
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    cbs = codebooks.saved_codebooks(folder)
    for cb in cbs:
        cb.eval()
    contrasts = topic_contrasts(hf, tokenizer, cbs, args.docs, args.context)
    topics = sorted(contrasts)

    held_out = corpora.load_corpus("bbc", "eval")
    x, y = embedding.embed(held_out["text"].tolist()).numpy(), held_out["label"].to_numpy()
    classifier = LogisticRegression(max_iter=2000)
    accuracy = cross_val_score(classifier, x, y, cv=5).mean()
    classifier.fit(x, y)
    print(f"classifier: MiniLM + logistic regression on {len(y)} held-out BBC documents, "
          f"5-fold accuracy {accuracy:.3f}", flush=True)

    def patched_codes(topic: str, heads: int | None) -> dict:
        return {cb: [code for _, group_codes in
                     codebooks.strongest_codes_by_group(contrasts[topic][cb.hook_point], cb)[:heads]
                     for code in group_codes] for cb in cbs}

    def topic_rates(patch: dict) -> tuple[dict[str, float], str]:
        texts = []
        with ExitStack() as stack, codebooks.inserted_hf(hf, cbs):
            for cb, codes in patch.items():
                stack.enter_context(codebooks.forced_codes(cb, codes))
            for i, prompt in enumerate(PROMPTS[: args.prompts]):
                texts += generate(hf, tokenizer, prompt, args.samples, args.new_tokens, seed=i)
        predicted = classifier.predict(embedding.embed(texts).numpy())
        return {t: float((predicted == t).mean()) for t in topics}, texts[0]

    unsteered, _ = topic_rates({})
    steered: dict[str, dict[str, float]] = {}
    for strength, heads in STRENGTHS.items():
        steered[strength] = {}
        for topic in topics:
            rates, example = topic_rates(patched_codes(topic, heads))
            steered[strength][topic] = rates[topic]
            print(f"  {strength}, {topic}: {rates[topic]:.3f} {example!r}", flush=True)

    n = args.prompts * args.samples
    print(f"\n| topic | unsteered rate | steered, {' | steered, '.join(STRENGTHS)} | n per cell | heads patched "
          f"(one head; {', '.join(cb.hook_point for cb in cbs)}) |")
    print("|---|---|" + "---|" * len(STRENGTHS) + "---|---|")
    for t in topics:
        heads = "; ".join(str(codebooks.strongest_codes_by_group(contrasts[t][cb.hook_point], cb)[0][0]) for cb in cbs)
        cells = " | ".join(f"{steered[s][t]:.3f}" for s in STRENGTHS)
        print(f"| {t} | {unsteered[t]:.3f} | {cells} | {n} | {heads} |")
    gains = {s: [steered[s][t] - unsteered[t] for t in topics] for s in STRENGTHS}
    print("RESULT " + " ".join(f"mean_gain_{s.replace(' ', '_')}={np.mean(g):.3f}" for s, g in gains.items())
          + f" classifier_accuracy={accuracy:.3f} "
          + " ".join(f"{t}={unsteered[t]:.2f}->{steered['every head'][t]:.2f}" for t in topics))


if __name__ == "__main__":
    main()
