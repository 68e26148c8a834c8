"""Prompt templates: plain files, chosen by name (`tuneloop prompts list`) or path."""
