"""Prompt encoders of the model families with more than one text tower (each a ``PromptEncoder``)."""
