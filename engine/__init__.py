"""Livecap's engine: audio, models, streaming policies, transcripts. Never imports Qt."""
