"""Attention control: video attention processors (:mod:`.processors`), prompt-to-prompt controllers
(:mod:`.p2p`), token utilities (:mod:`.tokens`) and step windows (:mod:`.windows`). Import the modules
directly: this package imports nothing, so that checking prompts (tokens, windows) imports neither torch
nor diffusers."""
