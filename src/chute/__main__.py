"""`python -m chute` is the `chute` command."""

from .cli import main

main()
