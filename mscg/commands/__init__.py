"""One module per subcommand: a plain `<verb>()` that works and returns, and a thin `<verb>_cli`."""
