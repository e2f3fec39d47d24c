"""One module per subcommand: ``add_parser(subparsers)`` and the ``run(args)`` it sets."""
