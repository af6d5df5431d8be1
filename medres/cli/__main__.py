"""``python -m medres.cli``: the same as the ``medres`` console script."""

from medres.cli import main

main()
