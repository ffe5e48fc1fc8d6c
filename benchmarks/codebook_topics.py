"""Topic steering with codebook features on SmolLM2 (issue #17; the paper's TinyStories experiment,
arXiv:2310.17230 section 5): find each BBC topic's codes by activation contrast, force them while
sampling, and count how often a held-out topic classifier labels the generations with that topic.

    .venv/bin/workbench codebooks --name smollm2-bbc-codebooks     # the variant (defaults)
    .venv/bin/python benchmarks/codebook_topics.py --variant smollm2-bbc-codebooks

Topic codes: per codebook, the `--codes` codes whose firing rate on the tokens of the topic's BBC
train documents most exceeds their rate on the other topics' tokens (`contrast_codes`). Steering:
those codes forced at every position of prompt and continuation (`patch_codes`), at every codebook
of the variant at once. Generation: `--prompts` neutral openings, `--samples` samples each at
temperature 1, `--new-tokens` tokens. Classifier: MiniLM embeddings + logistic regression fitted on
the BBC eval split (documents the finetune never saw; its cross-validated accuracy is printed).
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from workbench import codebooks, corpora, embedding
from workbench.models import load_model

PROMPTS = ["The", "Yesterday", "In a statement,", "According to", "It was announced that", "This week",
           "A new report", "On Monday", "Experts say", "The latest"]


def topic_codes(loaded, hook_point: str, n_codes: int, docs: int, context: int) -> dict[str, list[int]]:
    train = corpora.load_corpus("bbc", "train")
    tokens, labels = [], []
    for label, group in train.groupby("label"):
        for text in group["text"].head(docs):
            ids = loaded.tokenizer(text, return_tensors="pt").input_ids[0, :context]
            tokens.append(ids)
            labels += [label] * len(ids)
    codebook = codebooks.codebook_at(loaded.model, hook_point)
    ids = torch.cat([codebooks.code_ids(loaded.model, t[None], hook_point)[0] for t in tokens])
    label_array = np.array(labels)
    return {label: codebooks.contrast_codes(ids, torch.from_numpy(label_array == label), codebook.d_sae, n_codes)
            for label in sorted(set(labels))}


def generate(loaded, prompt: str, samples: int, new_tokens: int, seed: int) -> list[str]:
    torch.manual_seed(seed)
    tokens = loaded.model.to_tokens(prompt, prepend_bos=False).repeat(samples, 1)
    out = loaded.model.generate(tokens, max_new_tokens=new_tokens, temperature=1.0, verbose=False)
    return loaded.tokenizer.batch_decode(out, skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="smollm2-bbc-codebooks")
    parser.add_argument("--codes", type=int, default=8, help="codes forced per codebook and topic")
    parser.add_argument("--docs", type=int, default=40, help="train documents per topic for the contrast")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=40)
    args = parser.parse_args()

    loaded = load_model(args.variant)
    hook_points = sorted(codebooks.codebooks_of(loaded.model))
    codes = {hp: topic_codes(loaded, hp, args.codes, args.docs, args.context) for hp in hook_points}
    topics = sorted(codes[hook_points[0]])

    held_out = corpora.load_corpus("bbc", "eval")
    x, y = embedding.embed(held_out["text"].tolist()).numpy(), held_out["label"].to_numpy()
    classifier = LogisticRegression(max_iter=2000)
    accuracy = cross_val_score(classifier, x, y, cv=5).mean()
    classifier.fit(x, y)
    print(f"classifier: MiniLM + logistic regression on {len(y)} held-out BBC documents, "
          f"5-fold accuracy {accuracy:.3f}")

    def topic_rates(steer: str | None) -> dict[str, float]:
        texts = []
        with ExitStack() as stack:
            if steer is not None:
                for hp in hook_points:
                    stack.enter_context(codebooks.patch_codes(loaded.model, hp, codes[hp][steer]))
            for i, prompt in enumerate(PROMPTS[: args.prompts]):
                texts += generate(loaded, prompt, args.samples, args.new_tokens, seed=i)
        predicted = classifier.predict(embedding.embed(texts).numpy())
        if steer is not None:
            print(f"  {steer}: {texts[0]!r}")
        return {t: float((predicted == t).mean()) for t in topics}

    unsteered = topic_rates(None)
    steered = {t: topic_rates(t)[t] for t in topics}
    n = args.prompts * args.samples
    print(f"\n| topic | unsteered rate | steered rate | n | codes forced per codebook ({', '.join(hook_points)}) |")
    print("|---|---|---|---|---|")
    for t in topics:
        shown = "; ".join(",".join(map(str, codes[hp][t])) for hp in hook_points)
        print(f"| {t} | {unsteered[t]:.3f} | {steered[t]:.3f} | {n} | {shown} |")
    gains = [steered[t] - unsteered[t] for t in topics]
    rates = " ".join(f"{t}={unsteered[t]:.2f}->{steered[t]:.2f}" for t in topics)
    print(f"RESULT mean_gain={np.mean(gains):.3f} min_gain={min(gains):.3f} classifier_accuracy={accuracy:.3f} {rates}")


if __name__ == "__main__":
    main()
