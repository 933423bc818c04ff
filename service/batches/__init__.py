"""Batches: a user's bulk file of prompts, its lines, and the uploaded files behind it."""
