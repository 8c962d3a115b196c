"""One extension per feature: /imagine, the buttons, /info and /show. Each ends with ``setup(bot)``."""
