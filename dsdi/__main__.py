"""``python -m dsdi`` (and ``torchrun -m dsdi``) run the CLI."""

from dsdi.cli.app import app

app()
