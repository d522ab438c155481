"""``python -m pepi_fleet`` is the ``pepi`` command."""

from pepi_fleet.cli import main

if __name__ == "__main__":
    main()
