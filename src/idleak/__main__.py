"""python -m idleak: the same as the idleak command."""

from idleak.cli import main

main()
