"""Conversions between basegpt and other ecosystems' formats.

The only place where tiktoken, tokenizers, transformers and gguf may be used, and only inside
the functions that need them, so `import basegpt` never imports them. (Import from HF needs
none of them: it reads JSON and safetensors directly.)

    renumbered.py   RenumberedTokenizer: the Tokenizer speaking another tokenizer's ids
                    (native id -> public id), e.g. GPT-2's byte order
    tokenizers.py   Tokenizer -> tiktoken Encoding / rank file, HF tokenizers tokenizer.json;
                    HF byte-level BPE (tokenizer.json, vocab.json + merges.txt) -> Tokenizer
    hf_gpt2.py      run directory <-> Hugging Face GPT-2 directory (config.json,
                    model.safetensors, tokenizer files); an imported tokenizer is renumbered
                    to keep HF's token ids; `basegpt export` / `basegpt import hf`, which
                    reads Llama directories too, through hf_llama.py
    hf_llama.py     run directory <-> Hugging Face Llama directory (same files), and the
                    choice between GPT-2 and Llama for a model (`basegpt export --format
                    llama|auto`)
    gguf.py         run directory -> one GGUF file that llama.cpp runs (its "gpt2" or "llama"
                    architecture, f32 or f16, with the tokenizer); `basegpt export --format gguf`
"""
