"""The command line's commands, one function each (training.py, serving.py); bear_classifier/__main__.py parses the
arguments and calls them."""
