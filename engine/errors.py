"""Errors a user can act on: each carries what went wrong and what to do about it."""

from __future__ import annotations


class LivecapError(Exception):
    """Base of every error shown to a user; `hint` says what to do next."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class ModelError(LivecapError):
    """A model cannot be had or used: not cached, offline, wrong files, bad weights."""


class AudioError(LivecapError):
    """An audio source cannot be opened or read, or was lost mid-session."""
