"""The command-line programs: thin modules that parse flags into configs and call the library.

No library package imports from here. ``nas.cli.entry`` holds the console scripts' entry points.
"""
