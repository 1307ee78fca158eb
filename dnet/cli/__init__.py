"""The ``dnet`` command line: thin click commands over library functions, one module a verb (``main.VERBS``)."""

from dnet.cli.main import main, reports_errors

__all__ = ["main", "reports_errors"]
