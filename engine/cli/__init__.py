"""The terminal side of `livecap` subcommands (main.py parses, these modules do the work)."""
