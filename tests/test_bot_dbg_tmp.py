import asyncio
from tests.test_bot_delivery import *
async def test_dbg(redis_server, redis_conn):
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        bot.delivery.retry_s = 0.1
        job_id, message_id = await submit(bot, fake, worker)
        fake.fail("PATCH", r"/messages/@original$", 503, times=3)
        worker.run(job_id)
        await asyncio.sleep(2)
        print(fake.calls[3:])
        print(redis_conn.xpending_range(DELIVERIES, store.GROUP, "-", "+", 10))
        print(bot.delivery._in_flight, bot._loops)
        assert 0
