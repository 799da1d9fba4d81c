"""``python -m hpsearch``."""

from hpsearch.cli import main_entry

main_entry()
