"""Conversions between basegpt and other ecosystems' formats.

The only place where tiktoken, tokenizers and transformers may be used, and only inside the
functions that need them, so `import basegpt` never imports them.

    tokenizers.py   Tokenizer -> tiktoken Encoding / rank file, HF tokenizers tokenizer.json
"""
