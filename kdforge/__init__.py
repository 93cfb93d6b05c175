"""kdforge: distill a student, merge training-only branches, export and profile it, in one tool."""

__version__ = "0.1.0"
