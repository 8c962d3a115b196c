"""Prompt encoders of the model families whose text stack is more than one CLIP tower.

Each implements ``worker.text_encoding.PromptEncoder`` (``encode_request(request, *, cfg)``) and
writes its formula in its docstring:

- ``sdxl``: SDXL (two CLIP towers' penultimate states, the second tower's pooled vector);
- ``flux``: FLUX.1 (CLIP-L's pooled vector + T5's token states);
- ``sd3``: SD 3 / 3.5 (CLIP-L and CLIP-G penultimate states with T5's, and both pooled vectors);

over the shared pieces: ``clip`` (a CLIP tower: 75-token chunks, last or penultimate layer, the
pooled vector), ``t5`` (a T5 encoder over ``max_sequence_length`` tokens, reporting what it cuts)
and ``blend`` (the ``::`` weights and ``--no`` formula, applied to every tensor of an encoding).
"""
