"""Conversions between basegpt and other ecosystems' formats.

The only place where tiktoken, tokenizers, transformers and gguf may be used, and only inside
the functions that need them, so `import basegpt` never imports them. (Import from HF needs
none of them: it reads JSON and safetensors directly.)

Imports point one way, down this list's layers: entry points -> per-format mappings -> shared
file helpers -> tokenizers -> basegpt's checkpoint, model and tokenizer.

    hf.py           entry points for Hugging Face, both architectures: export_hf (GPT-2),
                    export_llama, export_auto (GPT-2 if it fits, else Llama) with the hint
                    for a model neither fits; import_hf, which reads either by config.json;
                    export_tiktoken. `basegpt export` / `basegpt import hf`
    gguf.py         run directory -> one GGUF file that llama.cpp runs (its "gpt2" or "llama"
                    architecture, f32 or f16, with the tokenizer); `basegpt export --format gguf`
    hf_gpt2.py      the GPT-2 mapping: which models fit, config.json and tensors both ways
    hf_llama.py     the Llama mapping, the same; and what any Llama model is, which gguf.py
                    shares
    hf_files.py     a Hugging Face directory's files: names, the all-or-nothing writer, the
                    weights reader (safetensors; a pickle only on request), the tokenizer
                    reader; where an export comes from and may go (gguf.py's too)
    tokenizers.py   Tokenizer -> tiktoken Encoding / rank file, HF tokenizers tokenizer.json;
                    HF byte-level BPE (tokenizer.json, vocab.json + merges.txt) -> Tokenizer
    renumbered.py   RenumberedTokenizer: the Tokenizer speaking another tokenizer's ids
                    (native id -> public id), e.g. GPT-2's byte order; an imported
                    tokenizer is renumbered to keep HF's token ids
"""
