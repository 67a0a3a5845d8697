"""The baselines, one readable file each, registered by name in :mod:`ttt4rec_edu.models`.

:data:`BASELINES` are the five of the paper's Table 2, in the order they were published: ``gru4rec``, ``narm``,
``sasrec``, ``bert4rec``, ``mamba4rec`` (each registers itself with ``role="baseline"``; the registry imports every
module of this package, so a new baseline is one new file here, see ``ttt4rec_edu.models``). Each follows its
RecBole 1.2 implementation (Mamba4Rec: the authors' RecBole-based code) — defaults, layer order and initialisation
are written in each module's docstring — and scores with ``score_all(item_seq, lengths) -> (batch, num_items + 1)``,
column 0 = −inf, plus ``encode``/``item_table`` so that scores = ``encode @ item_table().T``. All train with full-
softmax cross-entropy over all items, except BERT4Rec, which brings its own Cloze ``calculate_loss``.

``pop`` (:mod:`ttt4rec_edu.baselines.pop`, RecBole's ``Pop``) lives here too but is *not* in :data:`BASELINES`: it
is the reference line (every item scored by its training popularity, the history ignored) that any sequential model
must beat, not one of the paper's compared models. It has no parameters; ``fit_statistics`` counts the training
targets once.
"""
import importlib
import pkgutil

from ttt4rec_edu.models import baseline_names

from ttt4rec_edu.baselines.bert4rec import BERT4Rec, BERT4RecConfig
from ttt4rec_edu.baselines.gru4rec import GRU4Rec, GRU4RecConfig
from ttt4rec_edu.baselines.mamba4rec import (
    Mamba4Rec,
    Mamba4RecConfig,
    MambaBlock,
    cuda_kernel_available,
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
)
from ttt4rec_edu.baselines.narm import NARM, NARMConfig
from ttt4rec_edu.baselines.pop import PopularityRecommender
from ttt4rec_edu.baselines.sasrec import SASRec, SASRecConfig

# every module of this package registers its model when imported: a new baseline is one new file here
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

BASELINES = baseline_names()   # registered with role="baseline", in the order they were published

__all__ = [
    "BASELINES", "BERT4Rec", "BERT4RecConfig", "GRU4Rec", "GRU4RecConfig", "Mamba4Rec", "Mamba4RecConfig",
    "MambaBlock", "NARM", "NARMConfig", "PopularityRecommender", "SASRec", "SASRecConfig", "cuda_kernel_available",
    "selective_scan", "selective_scan_chunked", "selective_scan_reference",
]
