"""Command handlers and parsers: they parse, check, call the library and print; the library never prints."""
