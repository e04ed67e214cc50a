"""Conversations with the assistant's agents and their messages."""
