"""`python -m teachwhy ...` (also what `accelerate launch -m teachwhy ...` runs)."""

from teachwhy.cli import main

main()
