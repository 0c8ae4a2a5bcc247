"""Tasks: a small job queue with a Flask API and a background worker.

Run the web app with ``gunicorn 'tasks_app:create_app()'`` and the worker with
``python -m tasks_app.worker``.
"""

import os

from flask import Flask

from .extensions import db, migrate

# Only for local development. Set SECRET_KEY in the environment everywhere else.
DEV_SECRET_KEY = "dev-only-insecure-secret-key"


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY=os.environ.get("SECRET_KEY", DEV_SECRET_KEY),
        # A relative SQLite path is resolved inside the instance folder by Flask-SQLAlchemy.
        SQLALCHEMY_DATABASE_URI=os.environ.get("DATABASE_URL", "sqlite:///tasks.db"),
        DEBUG=_env_flag("DEBUG"),
    )
    app.json.sort_keys = False
    if test_config:
        app.config.update(test_config)

    if app.config["SECRET_KEY"] == DEV_SECRET_KEY and not app.debug:
        app.logger.warning("SECRET_KEY is not set; using the insecure development key")

    db.init_app(app)
    migrate.init_app(app, db)

    from . import models  # noqa: F401  (register the models with SQLAlchemy)
    from .views import bp

    app.register_blueprint(bp)
    return app
