"""One blueprint per API face: Ollama (/api), OpenAI (/v1), native jobs (/jobs), web (/)."""
