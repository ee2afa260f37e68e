"""The one exception type for bad user input; the CLI prints its message and exits with code 2."""


class InputError(Exception):
    """Bad user input (missing file or column, unparseable row...). The message names the file, the line
    and what to do; the CLI shows it without a traceback and exits with status 2."""
