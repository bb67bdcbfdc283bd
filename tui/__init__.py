"""qtui.tui: the ``qtui`` command, its console and scripted subcommands."""
