"""The terminal adapter: `lastresort chat`, for trying the rules on one machine."""
