"""``python -m durable``: the ``durable`` command line."""

from durable.cli import main

main()
