"""`nbdev_export`, with the `__all__` lines of the modules at most 120 characters: nbdev 2 wraps the list at 120 and then
puts `__all__ = ` before its first line. Run it instead of `nbdev_export` (the test command does): python tests/export.py"""
import sys
import textwrap

import nbdev.maker
from nbdev.doclinks import nbdev_export

PREFIX = len("__all__ = ")


class AllWrapper(textwrap.TextWrapper):
    "nbdev's wrapper of `__all__`, with room on the first line for the assignment that precedes it."
    def __init__(self, **kwargs): super().__init__(**{**kwargs, "initial_indent": " " * PREFIX})
    def wrap(self, text):
        lines = super().wrap(text)
        return [lines[0][PREFIX:], *lines[1:]] if lines else lines


if __name__ == "__main__":
    nbdev.maker.TextWrapper = AllWrapper
    nbdev_export(*sys.argv[1:2])
