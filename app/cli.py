"""Command line: ``exprssl migrate`` and ``exprssl serve`` (migrate, then run the API with its worker)."""

from __future__ import annotations

import argparse
from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from app.config import get_settings


def alembic_config(url: str | None = None) -> Config:
    """Alembic config pointing at the packaged migrations; ``url`` overrides the settings' database."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str | None = None) -> None:
    """Bring the registry schema to the newest migration."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url or settings.resolved_database_url), "head")


def serve(host: str, port: int) -> None:
    import uvicorn

    migrate()
    uvicorn.run("app.main:create_app", factory=True, host=host, port=port)


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="exprssl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    run = sub.add_parser("serve", help="migrate, then serve the API with its in-process job worker")
    run.add_argument("--host", default=settings.host)
    run.add_argument("--port", type=int, default=settings.port)
    args = parser.parse_args(argv)
    if args.command == "migrate":
        migrate()
    else:
        serve(args.host, args.port)


if __name__ == "__main__":
    main()
