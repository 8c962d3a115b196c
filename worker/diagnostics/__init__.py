"""Embedding diagnostics: what the text encoders made of a prompt, and how well the images follow it.

    tokens.py     1-2. tokens per sub-prompt against CLIP's 75-token window, weights
    influence.py  3.   word influence by leave-one-out, removable words, shorter prompts
    pooling.py    4.   cls / mean / max / eos text vectors; static vs contextual tokens
    alignment.py  5.   alignment (CLIP) scores, ranking, sub-prompt x image matrix, leaking negatives
    analyzer.py        ``Diagnostician``: loads the encoders once, runs all of the above

The schema of the result (diagnostics.json) lives in ``imagine.diagnostics`` (torch-free, shared
with the bot); its Discord embed in ``bot.render_analysis``.
"""

from worker.diagnostics.analyzer import Diagnostician

__all__ = ["Diagnostician"]
