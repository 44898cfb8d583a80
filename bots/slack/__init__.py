"""The Slack adapter: Bolt in HTTP or Socket Mode, translating Slack events to the core and outcomes back."""
