"""The ``imagine`` command: the composition root, the one package that imports every layer.

    cli  ->  bot | worker  ->  imagine (the core)

``cli.main`` parses the command line and hands each subcommand to the layer that does it
(``bot.app`` for ``imagine bot``, ``worker.worker`` for ``imagine worker``, the core for
``parse``, ``schema`` and ``queue``); ``cli.local_run`` is ``imagine run``, the whole path
without Discord. Nothing imports ``cli`` (the import-linter contracts in pyproject.toml hold it).
"""
