"""The Discord adapter: a discord.py client translating gateway events to the core and outcomes back.

Absolute imports only in this package: `import discord` must always mean the SDK, never `bots.discord`."""
