"""Kyutai STT in plain PyTorch: the streaming Mimi encoder and the text LM."""
