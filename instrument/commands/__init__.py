"""One module per ``brainpaste`` subcommand; each defines ``register(subparsers)``."""
