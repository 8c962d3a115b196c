import asyncio, redis, logging
from tests.discord_stub import FakeDiscord
from tests.bot_harness import running_bot, feed, FakeWorker, wait_until
async def test_smoke(redis_server, redis_conn, caplog):
    caplog.set_level(logging.INFO)
    async with FakeDiscord() as fake:
        async with running_bot(redis_server.url, fake) as bot:
            print(fake.calls)
            feed(bot, fake.slash("imagine", prompt="a red fox --ar 16:9"))
            await fake.wait_for("POST", "/callback")
            w = FakeWorker(redis_conn)
            [job] = w.open_jobs()
            w.start(job)
            for s in range(1, 5):
                w.progress(job, s, 4); await asyncio.sleep(0.1)
            w.finish(job)
            await fake.wait_for("PATCH", "/messages/", 2)
            await asyncio.sleep(0.5)
            for c in fake.calls: print(c, c.json if c.method != "PUT" else "", [f.filename for f in c.files])
    assert 0
