"""Live chat: rooms per stream, fan-out to WebSocket clients, moderation."""
