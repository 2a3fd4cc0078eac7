"""One module per command of the ``gliomasuite`` command line: ``add_parser(subparsers)`` and ``run(args, progress)``."""
