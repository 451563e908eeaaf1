"""Layer-wise configuration: blocks of one model that differ from each other.

    python examples/layerwise_config.py

`ModelConfig.blocks` holds one override per block; an override sets only the per-block
fields it names (n_head, n_kv_head, n_k, n_v, n_ff, activation, norm, attention, dropouts)
and the block takes everything else from the model-wide fields. Here: a wide first block,
a grouped-query middle block (4 query heads sharing 1 key/value head) with a SwiGLU
feed-forward, and a narrow last block with 2 heads. The script prints each block's resolved
settings and parameter count, checks that the JSON form rebuilds the same model, and runs a
prompt through it to show each layer's attention shape.
"""

import json

import torch

from basegpt import B2lM, ModelConfig
from basegpt.insight import parameter_counts

config = ModelConfig(
    vocab_size=512, n_context=64, n_block=3, n_embed=128, n_head=4, n_k=32, n_v=32, n_ff=256,
    blocks=[
        {"n_ff": 512},                                                 # block 0: wider MLP
        {"n_kv_head": 1, "activation": "swiglu"},                      # block 1: multi-query + SwiGLU
        {"n_head": 2, "n_k": 16, "n_v": 16, "n_ff": 128},              # block 2: small
    ],
)
torch.manual_seed(0)
model = B2lM(config)
counts = parameter_counts(model)

print(f"{'block':<6} {'heads':<9} {'n_k/n_v':<8} {'n_ff':<5} {'activation':<10} "
      f"{'attention':>9} {'feed-fwd':>9} {'norms':>6} {'total':>8}")
for i, (block, n) in enumerate(zip(config.block_configs, counts["blocks"])):
    heads = f"{block.n_head}q/{block.n_kv_head}kv"
    print(f"{i:<6} {heads:<9} {f'{block.n_k}/{block.n_v}':<8} {block.n_ff:<5} {block.activation:<10} "
          f"{n['attention']:>9,} {n['feedforward']:>9,} {n['norms']:>6,} {n['total']:>8,}")
print(f"embedding {counts['embedding']:,}, head {counts['head']:,}, "
      f"total {counts['total']:,} parameters")

# The same model from JSON, as it is stored in a run's config.json.
as_json = json.dumps(config.to_dict())
assert ModelConfig.from_dict(json.loads(as_json)) == config, "JSON round trip changed the config"
print(f"config.json form: \"blocks\": {json.dumps(config.to_dict()['blocks'])}")

ids = torch.randint(0, config.vocab_size, (1, 10))                     # (B, T)
logits, attention = model(ids, return_attention=True)
print(f"logits {tuple(logits.shape)}; attention per layer: "
      + ", ".join(str(tuple(w.shape)) for w in attention))
