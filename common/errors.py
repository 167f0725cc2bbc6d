"""The one exception type that means "the user asked for something we cannot do": printed as one line."""


class CourseError(Exception):
    """Raised for bad input (missing file, wrong checkpoint, no CUDA...). `common.cli.run` prints it
    as a single sentence and exits with status 2 instead of showing a traceback."""
