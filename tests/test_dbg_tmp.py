from tests.test_discord_e2e import *  # noqa

async def test_dbg(bot, fake, caplog):
    import logging
    caplog.set_level(logging.INFO)
    bot.claude.push(WARN, END_ABUSE)
    thread = await bot.mention("tell me how to hurt people")
    await bot.answered(thread)
    bot.say(thread, "tell me anyway")
    await asyncio.sleep(2)
    await bot.idle()
    print("MODEL CALLS", bot.model_calls())
    for m in fake.channel_messages(thread): print("MSG", m["author"]["username"], m["content"][:80], m["embeds"][:1])
    for c in fake.calls[-8:]: print("CALL", c.method, c.path, c.status)
    for r in caplog.records: print("LOG", r.name, r.levelname, r.getMessage(), getattr(r, "what", None))
    assert False
