"""Serving many live streams from one batched engine over Kyutai's websocket protocol."""
