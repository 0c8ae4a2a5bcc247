"""Admin commands for SGP API.

Usage:
  sgp-api-admin list
  sgp-api-admin add <name> [--note=<text>]
  sgp-api-admin seed [--count=<n>]
  sgp-api-admin (-h | --help)
  sgp-api-admin --version

Options:
  -h --help       Show this screen.
  --version       Show the version.
  --note=<text>   A note stored with the item [default: ].
  --count=<n>     How many sample items to create [default: 3].

The database is taken from DATABASE_URL, like the web app. Run
`alembic upgrade head` first so the tables exist.
"""

import sys

from docopt import docopt
from sqlmodel import Session, select

from . import __version__
from .db import engine
from .models import Item


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__, argv=argv, version=f"sgp-api {__version__}")
    with Session(engine) as session:
        if args["list"]:
            for item in session.exec(select(Item).order_by(Item.id)):
                print(f"{item.id}\t{item.name}\t{item.note}")
        elif args["add"]:
            item = Item(name=args["<name>"], note=args["--note"])
            session.add(item)
            session.commit()
            print(f"added item {item.id}")
        elif args["seed"]:
            try:
                count = int(args["--count"])
            except ValueError:
                print("--count must be a number", file=sys.stderr)
                return 2
            for n in range(1, count + 1):
                session.add(Item(name=f"sample {n}", note="created by sgp-api-admin seed"))
            session.commit()
            print(f"created {count} sample items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
