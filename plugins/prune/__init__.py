"""Pruning techniques: unstructured magnitude pruning, and structured pruning of attention heads,
feed-forward neurons, whole layers and the vocabulary.

Structured pruning removes weights physically (smaller matrices, a smaller config where the config can say
so); importance is always scored on ``ctx.train`` (never ``ctx.eval``), seeded from ``ctx.seed``, and an
optional recovery fine-tune distils from the original teacher (``plugins.training.kd_finetune``).
Magnitude, feed-forward and layer pruning also take Llama-style causal LMs, whose scores use next-token
losses over the non-padding tokens; head and vocabulary pruning are for classifiers only.

Attention heads pruned unevenly across layers cannot be described by a transformers config: head pruning
declares the ``PRUNED_SHAPES`` layout (``shapes.py``), which keeps those shapes in the saved model's
manifest. Heavy imports (torch, transformers) happen inside the functions. One module per technique;
``common.py`` and ``importance.py`` hold what they share.
"""

from plugins.prune.ffn import FfnPruning
from plugins.prune.heads import HeadPruning
from plugins.prune.layers import LayerDropping, layers_to_keep
from plugins.prune.magnitude import MagnitudePruning
from plugins.prune.shapes import apply_pruned_shapes, pruned_shapes
from plugins.prune.vocabulary import VocabularyPruning

__all__ = [
    "FfnPruning",
    "HeadPruning",
    "LayerDropping",
    "MagnitudePruning",
    "VocabularyPruning",
    "apply_pruned_shapes",
    "layers_to_keep",
    "pruned_shapes",
]
