"""The Discord bot (``imagine bot``): a thin adapter over the core, without torch.

    app.py          ImagineBot (dependencies injected) and the launcher
    cogs/           one extension per feature: imagine, buttons (DynamicItems), info (/info, /show),
                    settings, prefer (/prefer option, /prefer suffix), shorten, describe, admin
    launch.py       admit jobs from an interaction and give each its message
    progress.py     follow running jobs' event streams; throttled progress edits
    delivery.py     the imagine:deliveries consumer group: results posted exactly once
    vanished.py     open messages whose job vanished from Redis say "(lost)" within a minute
    messages.py     where a job's message lives; edits via the interaction or the channel
    render.py       every line, embed and button as plain data (no discord import)
    custom_ids.py   the buttons' custom_id formats and templates
    images.py       uploads kept under Discord's size limit; CPU work off the event loop
    store.py        the bot's own Redis fields and keys, and the deliveries stream's reads

All Redis access is on one asyncio client (``imagine.aqueue`` and the core's async classes).
Modules below app.py are handed the parts they use (or ``launch.Launcher``), never ``bot.app``.
"""
