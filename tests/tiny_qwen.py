"""A second tiny model of another family and tokenizer than `tiny`, for what SmolLM2 vs Qwen does
at full size: a seeded 3-layer Qwen2 (attention biases made non-zero, untied unembedding, like
Qwen2.5-Coder's dequantised folder) with a byte-level BPE tokenizer trained on the shipped fixtures,
saved as a Hugging Face folder that `load_model(path)` opens."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from workbench.paths import fixtures_dir

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def fixture_texts() -> list[str]:
    return [json.loads(line)["text"] for line in (fixtures_dir() / "wiki_sample.jsonl").open()]


def bpe_tokenizer(folder: Path, vocab_size: int):
    """A byte-level BPE (the kind SmolLM2 and Qwen use) trained on the fixtures, saved and reloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(fixture_texts(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=SPECIAL[0], eos_token=SPECIAL[2],
                            pad_token=SPECIAL[0]).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(str(folder))


def tiny_qwen(folder: Path) -> Path:
    """The model's folder (no "llama" in the path: TransformerLens guesses architectures from names)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = bpe_tokenizer(folder, 600)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    model.save_pretrained(folder)
    return folder
