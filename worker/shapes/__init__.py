"""The embedded ``shapes`` model: a text-to-image stack this project trains itself, offline.

It makes the founding document's five stages concrete on a world small enough to train on two
CPU cores in under an hour (``train/train_shapes.py``; weights and card in ``models/shapes/``):

- ``world``: the procedural data set: one shape (circle, square, triangle, cross) of one of nine
  colours, at one of 3 x 3 positions, in one of three sizes, on a plain background of another
  colour, captioned in varied English; 36 (colour, shape, position) triples held out.
- ``model``: the components (UNet2DConditionModel cross-attending to the frozen pretrained
  all-MiniLM-L6-v2's contextual token vectors, a 2x AutoencoderKL, a v-prediction scheduler) and
  ``ensure_shapes_model``, which assembles them with MiniLM into a directory that
  ``StableDiffusionPipeline.from_pretrained`` loads (``worker.models.load_model``, source
  ``builtin:shapes``), so ``worker.generate`` serves it like any model.
- ``alignment``: the world's CLIP: an image encoder trained against MiniLM's mean-pooled text
  vectors with symmetric InfoNCE and a learned temperature: ``ShapesAligner.score`` / ``rank``.
- ``checker``: a deterministic reader of images (background, colour, shape, position, size).
- ``evaluate``: the held-out prompts, distractor captions and jobs the bench and tests use.
"""
