"""The model store and everything about a model: names, Modelfiles, GGUF, templates, pulls."""
