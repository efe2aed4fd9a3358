"""AttentionFlow: zero-shot, text-driven video editing with Stable Diffusion and Motion Map Injection."""

__version__ = "0.1.0"
