"""ttt4rec_edu — TTT4Rec (Yang, Wang, Ge 2024) re-implemented to be read, run and taught.

Modules, one idea each:

- ``ttt4rec_edu.data``      raw-format readers, dataset registry + download, filters, the RecBole 1.2
                            sequential protocol (prefix samples, chronological ratio split), synthetic drift data
- ``ttt4rec_edu.metrics``   full-ranking HR@K / NDCG@K with memory-bounded chunked scoring
- ``ttt4rec_edu.models``    the model registry: ``build_model(name, num_items, max_len, **overrides)``
- ``ttt4rec_edu.train``     the outer training loop (Adam, early stopping, checkpoints, resume)
- ``ttt4rec_edu.rope``      rotary position embedding
- ``ttt4rec_edu.ttt``       the TTT layer (per-token loop, mini-batch loop, dual form, W_t trace)
- ``ttt4rec_edu.backbones`` Transformer / Mamba-style residual blocks around the TTT layer
- ``ttt4rec_edu.model``     the full TTT4Rec recommender
- ``ttt4rec_edu.baselines`` GRU4Rec, NARM, SASRec, BERT4Rec, Mamba4Rec
"""

__version__ = "0.1.0"
